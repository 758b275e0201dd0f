"""Data sets rendered on the fly (``shapes``, EM): sample ``i`` of a split depends only on
``(seed, split, i)``, so every run, worker count and process sees the same images.

A subclass says how one sample is drawn from a seeded generator (:meth:`RenderedDataset.draw`);
indexing, the open-ended training split, tensor conversion and the joint transform are here.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torchvision import tv_tensors

from segkit.data.samples import PairTransform, SampleDataset

SPLITS = ("train", "val", "test")
# What the data-module contract (segkit.contracts) builds of a rendered data set: a few small
# images, rendered in the main process.
RENDERED_CONTRACT_CONFIG = {"train_size": 4, "val_size": 2, "test_size": 2, "image_size": 32, "batch_size": 2,
                            "num_workers": 0}


class RenderedDataset(SampleDataset):
    """A deterministic split of rendered ``(image, mask)`` samples.

    Args:
        split: ``train``, ``val`` or ``test`` (each draws from its own seed stream).
        length: samples in the split; ``open_ended`` splits also serve indices past it (what
            :class:`segkit.data.sampling.EpochSampler` draws to show new samples every epoch).
        image_size: side, or ``(height, width)``.
        seed: the data set's seed.
        transform: joint ``(Image, Mask)`` transform (augmentation, normalisation).
    """

    def __init__(
        self,
        split: str,
        length: int,
        image_size: int | tuple[int, int] = 64,
        seed: int = 0,
        transform: PairTransform | None = None,
        open_ended: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split_code = SPLITS.index(split)
        self.length = length
        self.height, self.width = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.seed = seed
        self.transform = transform
        self.open_ended = open_ended

    @abstractmethod
    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One raw sample: image ``(H, W)`` or ``(H, W, C)`` float32 and mask ``(H, W)`` uint8."""

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw sample ``index``: ``0 <= index < len()``, or any ``index >= 0`` if open-ended."""
        if index < 0 or (index >= self.length and not self.open_ended):
            raise IndexError(f"index {index} out of range for a split of {self.length}")
        return self.draw(np.random.default_rng([self.seed, self.split_code, index]))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self[i] for i in range(self.length))

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image_np, mask_np = self.render(index)
        pixels = torch.from_numpy(image_np)
        image = tv_tensors.Image(pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1))
        return image, tv_tensors.Mask(torch.from_numpy(mask_np).long())
