"""``shapes``: the built-in synthetic multi-class data set (no download).

Scenes are rendered on the fly, in the DataLoader workers, by
:func:`segkit.data.shapes_render.render_scene`; sample ``i`` of a split depends only on
``(seed, split, i)``, so every run, worker count and process sees the same images. Since
scenes are free, the training split can show new ones every epoch (``resample_train``):
epoch ``e`` draws samples ``e * train_size ... (e + 1) * train_size - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from segkit.data.base import SegmentationDataModule
from segkit.data.sampling import EpochSampler
from segkit.data.shapes_render import IGNORE_INDEX, SHAPES_CLASS_NAMES, render_scene
from segkit.data.transforms import segmentation_transforms

SPLITS = ("train", "val", "test")
# Renders are in [0, 1]; centring them on 0 with unit-ish spread helps the first steps.
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)

PairTransform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]]


class ShapesDataset(Dataset):
    """A deterministic split of synthetic scenes.

    Example:
        >>> ds = ShapesDataset("val", length=4, image_size=(48, 64))
        >>> image, mask = ds[0]
        >>> tuple(image.shape), tuple(mask.shape), mask.dtype
        ((3, 48, 64), (48, 64), torch.int64)
    """

    def __init__(
        self,
        split: str,
        length: int,
        image_size: int | tuple[int, int] = 64,
        seed: int = 0,
        transform: PairTransform | None = None,
        max_objects: int = 6,
        boundary_width: int = 1,
        open_ended: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split_code = SPLITS.index(split)
        self.length = length
        self.height, self.width = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.seed = seed
        self.transform = transform
        self.max_objects = max_objects
        self.boundary_width = boundary_width
        # Open-ended: indices past len() are further scenes (what EpochSampler draws).
        self.open_ended = open_ended

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw scene: image ``(H, W, 3)`` float32 in [0, 1] and mask ``(H, W)`` uint8.

        Indices are ``0 <= index < len()``, or any ``index >= 0`` if the split is open-ended.
        """
        if index < 0 or (index >= self.length and not self.open_ended):
            raise IndexError(f"index {index} out of range for a split of {self.length}")
        rng = np.random.default_rng([self.seed, self.split_code, index])
        return render_scene(
            rng, self.height, self.width,
            max_objects=self.max_objects, boundary_width=self.boundary_width,
        )

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self[i] for i in range(self.length))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_np, mask_np = self.render(index)
        image = tv_tensors.Image(torch.from_numpy(image_np).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(mask_np).long())
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class ShapesDataModule(SegmentationDataModule):
    """Synthetic scenes of overlapping textured objects on a textured background.

    Six classes (background + five shapes, each with its own texture and size range, random
    colours); object boundaries are marked 255 (ignored) as in PASCAL VOC. With
    ``resample_train`` every epoch trains on new scenes (val and test never change).

    Example:
        >>> dm = ShapesDataModule(train_size=8, val_size=4, test_size=4, num_workers=0)
        >>> dm.setup("fit")
        >>> images, masks = next(iter(dm.val_dataloader()))
        >>> dm.num_classes, tuple(images.shape)
        (6, (4, 3, 64, 64))
    """

    class_names = SHAPES_CLASS_NAMES
    num_classes = len(SHAPES_CLASS_NAMES)
    in_channels = 3
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        image_size: int | tuple[int, int] = 64,
        train_size: int = 1600,
        val_size: int = 200,
        test_size: int = 200,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int | str = "auto",
        pin_memory: bool = False,
        augment: bool = True,
        resample_train: bool = True,
        max_objects: int = 6,
        boundary_width: int = 1,
        mean: Sequence[float] = SHAPES_MEAN,
        std: Sequence[float] = SHAPES_STD,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.mean, self.std = list(mean), list(std)
        self.image_size = image_size if isinstance(image_size, int) else tuple(image_size)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed
        self.augment = augment
        self.resample_train = resample_train
        self.scene_options = {"max_objects": max_objects, "boundary_width": boundary_width}

    def make_split(self, split: str) -> ShapesDataset:
        transform = segmentation_transforms(
            train=split == "train" and self.augment, mean=self.mean, std=self.std,
            hflip=True, vflip=True,
        )
        return ShapesDataset(
            split, self.sizes[split], self.image_size, self.seed, transform, **self.scene_options,
            open_ended=split == "train" and self.resample_train,
        )

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (self.make_split(s) for s in SPLITS)

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.train_set, EpochSampler(len(self.train_set), self.seed, self.resample_train))
