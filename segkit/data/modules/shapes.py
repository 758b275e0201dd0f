"""``shapes``: the built-in synthetic multi-class data set (no download).

Scenes are rendered on the fly, in the DataLoader workers, by
:func:`segkit.data.synthetic.shapes_render.render_scene`; sample ``i`` of a split depends only on
``(seed, split, i)``, so every run, worker count and process sees the same images. Since
scenes are free, the training split can show new ones every epoch (``resample_train``):
epoch ``e`` draws samples ``e * train_size ... (e + 1) * train_size - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from segkit.data.base import SegmentationDataModule, check_normalization
from segkit.data.synthetic.rendered import RENDERED_CONTRACT_CONFIG, SPLITS, RenderedDataset
from segkit.data.sampling import EpochSampler
from segkit.data.synthetic.shapes_render import IGNORE_INDEX, SHAPES_CLASS_NAMES, render_scene
from segkit.data.transforms import segmentation_transforms

# Renders are in [0, 1]; centring them on 0 with unit-ish spread helps the first steps.
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)


class ShapesDataset(RenderedDataset):
    """A deterministic split of synthetic scenes (:func:`segkit.data.synthetic.shapes_render.render_scene`).

    Example:
        >>> ds = ShapesDataset("val", length=4, image_size=(48, 64))
        >>> image, mask = ds[0]
        >>> tuple(image.shape), tuple(mask.shape), mask.dtype
        ((3, 48, 64), (48, 64), torch.int64)
    """

    def __init__(self, *args: Any, max_objects: int = 6, boundary_width: int = 1, **kwargs: Any) -> None:
        """``RenderedDataset``'s arguments, plus the scene's object count and ignore band."""
        super().__init__(*args, **kwargs)
        self.max_objects = max_objects
        self.boundary_width = boundary_width

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A scene: image ``(H, W, 3)`` float32 in [0, 1] and mask ``(H, W)`` uint8."""
        return render_scene(rng, self.height, self.width, max_objects=self.max_objects,
                            boundary_width=self.boundary_width)


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

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        return dict(RENDERED_CONTRACT_CONFIG)

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
        check_normalization(self.mean, self.std, self.in_channels)
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
