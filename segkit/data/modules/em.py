"""``em``: synthetic ISBI-2012-like electron-microscopy slices (no download).

Slices are rendered on the fly, in the DataLoader workers, by
:func:`segkit.data.synthetic.em_render.render_em_slice`; sample ``i`` of a split depends only on
``(seed, split, i)``, so every run, worker count and process sees the same images. As with
``shapes``, the training split can show new slices every epoch (``resample_train``): epoch
``e`` draws samples ``e * train_size ... (e + 1) * train_size - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from segkit.data.base import SegmentationDataModule, check_normalization
from segkit.data.synthetic.em_render import EM_CLASS_NAMES, MEMBRANE, render_em_slice
from segkit.data.em_transforms import em_transforms
from segkit.data.synthetic.rendered import RENDERED_CONTRACT_CONFIG, SPLITS, RenderedDataset
from segkit.data.sampling import EpochSampler

# Renders average ~0.58 with a spread of ~0.15 (measured); 0.5 / 0.25 maps them to about
# [-2, 2], close enough to zero-mean, unit-spread for the first steps (as for shapes).
EM_MEAN = (0.5,)
EM_STD = (0.25,)


class EMDataset(RenderedDataset):
    """A deterministic split of synthetic EM slices: ``(image (1, H, W), mask (H, W))``.

    Example:
        >>> ds = EMDataset("val", length=4, image_size=(48, 64))
        >>> image, mask = ds[0]
        >>> tuple(image.shape), tuple(mask.shape), mask.dtype
        ((1, 48, 64), (48, 64), torch.int64)
    """

    def __init__(self, *args: Any, cell_size: float = 56.0, **kwargs: Any) -> None:
        """``RenderedDataset``'s arguments, plus the typical distance between cell centres in px."""
        super().__init__(*args, **kwargs)
        self.cell_size = cell_size

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A slice: image ``(H, W)`` float32 in [0, 1] and mask ``(H, W)`` uint8."""
        return render_em_slice(rng, self.height, self.width, cell_size=self.cell_size)


class MembraneDataModule(SegmentationDataModule):
    """What the synthetic EM slices and ISBI 2012 share: grey slices of cells (class 0) and
    membranes (class 1), the U-Net paper's augmentation, and the ISBI scores (``em_scores``:
    models log pixel error and V_rand of the membrane class)."""

    class_names = EM_CLASS_NAMES
    num_classes = len(EM_CLASS_NAMES)
    in_channels = 1
    ignore_index = 255

    def __init__(
        self, batch_size: int, num_workers: int | str, pin_memory: bool, augment: bool, elastic: bool,
        mean: Sequence[float], std: Sequence[float], em_scores: bool,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.membrane_class = MEMBRANE if em_scores else None
        self.augment, self.elastic = augment, elastic
        self.mean, self.std = list(mean), list(std)
        check_normalization(self.mean, self.std, self.in_channels)

    def make_transform(self, train: bool) -> Callable:
        """The joint ``(Image, Mask)`` transform of a split: for training the U-Net paper's
        augmentation (rotations, flips, shifts, elastic deformation, grey values;
        :func:`segkit.data.em_transforms.em_transforms`), then normalisation."""
        return em_transforms(train=train and self.augment, mean=self.mean, std=self.std, elastic=self.elastic)


class EMDataModule(MembraneDataModule):
    """Synthetic grey-scale EM slices: cells separated by thin dark membranes (class 1).

    A stand-in for the ISBI 2012 challenge (:class:`segkit.data.modules.isbi.ISBI2012DataModule`)
    that needs no download: dark organelles inside the cells look like membrane but are
    labelled cell, so intensity alone does not separate the classes. With
    ``resample_train`` every epoch trains on new slices (val and test never change).
    ``em_scores`` has models log the ISBI scores (pixel error, V_rand) of the membrane class.

    Example:
        >>> dm = EMDataModule(image_size=64, train_size=8, val_size=4, test_size=4, num_workers=0)
        >>> dm.setup("fit")
        >>> images, masks = next(iter(dm.val_dataloader()))
        >>> dm.num_classes, dm.membrane_class, tuple(images.shape)
        (2, 1, (4, 1, 64, 64))
    """

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        return dict(RENDERED_CONTRACT_CONFIG)

    def __init__(
        self,
        image_size: int | tuple[int, int] = 128,
        train_size: int = 400,
        val_size: int = 16,
        test_size: int = 16,
        seed: int = 0,
        batch_size: int = 4,
        num_workers: int | str = "auto",
        pin_memory: bool = False,
        augment: bool = True,
        elastic: bool = True,
        resample_train: bool = True,
        cell_size: float = 56.0,
        mean: Sequence[float] = EM_MEAN,
        std: Sequence[float] = EM_STD,
        em_scores: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, augment, elastic, mean, std, em_scores)
        self.image_size = image_size if isinstance(image_size, int) else tuple(image_size)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed
        self.resample_train = resample_train
        self.cell_size = cell_size

    def make_split(self, split: str) -> EMDataset:
        return EMDataset(
            split, self.sizes[split], self.image_size, self.seed, self.make_transform(split == "train"),
            open_ended=split == "train" and self.resample_train, cell_size=self.cell_size,
        )

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (self.make_split(s) for s in SPLITS)

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.train_set, EpochSampler(len(self.train_set), self.seed, self.resample_train))
