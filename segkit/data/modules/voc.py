"""PASCAL VOC 2012 segmentation through torchvision's ``VOCSegmentation``.

The FCN paper validates on 'seg11valid': the 736 VOC2011 val images not in SBD's training set
(list from the reference repo, ``data/pascal/seg11valid.txt``). Put that file in
``<root>/VOCdevkit/VOC2012/ImageSets/Segmentation/`` (or pass its path) and set
``val_split=seg11valid``; the ids are looked up in the VOC2012 tree, which contains VOC2011's.

With ``folds=K``, fold ``fold`` validates on a K-th of ``train_split`` (less any ``val_split``
image; :mod:`segkit.data.folds`) and trains on the rest; ``val_split`` is then the test split only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.datasets import VOCSegmentation
from torchvision.transforms.v2 import functional as TF

from segkit.data.base import SegmentationDataModule, check_normalization
from segkit.data.folds import check_fold_settings, fold_split, read_present_classes
from segkit.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from segkit.data.samples import SampleDataset
from segkit.data.transforms import segmentation_transforms
from segkit.errors import SegkitError

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
STANDARD_SPLITS = ("train", "trainval", "val")


def read_mask(mask_path: str) -> np.ndarray:
    """A VOC mask's class indices (int64; 255 = ignore)."""
    with Image.open(mask_path) as mask:
        # A palette ("P") PNG stores class indices; np.array reads the indices, not colours.
        return np.array(mask, dtype=np.int64)


def load_pair(image_path: str, mask_path: str) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """An RGB image and its class-index mask (a palette PNG's indices, 255 = ignore)."""
    with Image.open(image_path) as image:
        pixels = TF.pil_to_tensor(image.convert("RGB"))
    return tv_tensors.Image(pixels), tv_tensors.Mask(torch.from_numpy(read_mask(mask_path)))


class VOCSplit(SampleDataset):
    """``(image, mask)`` pairs of one VOC split, as tensors through a joint ``transform``."""

    def __init__(self, images: Sequence[str], masks: Sequence[str], transform: Callable) -> None:
        self.images, self.masks, self.transform = list(images), list(masks), transform

    def __len__(self) -> int:
        return len(self.images)

    def sample_name(self, index: int) -> str:
        """The image file's name (per-image scores)."""
        return Path(self.images[index]).name

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        return load_pair(self.images[index], self.masks[index])


def voc_file_lists(root: str, year: str, split: str) -> tuple[list[str], list[str]]:
    """Image and mask paths of ``split``: train/trainval/val, seg11valid or a path to an id list."""
    standard = split if split in STANDARD_SPLITS else "val"
    try:
        voc = VOCSegmentation(root, year=year, image_set=standard)
    except (RuntimeError, FileNotFoundError) as error:
        raise SegkitError(
            f"data.root={root}: no VOC{year} tree ({error}); set data.download=true where the "
            f"network allows, or point data.root at the folder holding VOCdevkit/VOC{year}"
        ) from None
    if split in STANDARD_SPLITS:
        return list(voc.images), list(voc.masks)
    voc_dir = Path(voc.images[0]).parents[1] if voc.images else Path(root) / "VOCdevkit" / f"VOC{year}"
    list_file = Path(split) if split.endswith(".txt") else voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise SegkitError(
            f"{list_file}: no such id list for split {split!r}; copy seg11valid.txt from the FCN "
            "reference repo (data/pascal/) there, or use val_split=val"
        )
    ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    images = [str(voc_dir / "JPEGImages" / f"{i}.jpg") for i in ids]
    masks = [str(voc_dir / "SegmentationClass" / f"{i}.png") for i in ids]
    missing = [p for p in (*images, *masks) if not Path(p).is_file()]
    if missing:
        raise SegkitError(f"{list_file}: {len(missing)} listed files are missing, e.g. {missing[0]}")
    return images, masks


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC segmentation (21 classes, 255 = object boundaries, ignored).

    Training takes random ``crop_size`` crops (padded with the ignore index) so batches of
    differently sized images stack; with ``batch_size=1`` and ``crop_size=None`` it trains on
    whole images as the FCN reference does. Validation and test run on whole images, one at a
    time. VOC's test masks are not public (evaluation server), so ``test`` reuses ``val_split``.
    Inputs are normalised with ImageNet statistics, matching torchvision's VGG16 weights.

    Example:
        >>> dm = VOCDataModule(root="data/voc")  # reads data/voc/VOCdevkit/VOC2012
        >>> dm.num_classes, dm.class_names[15]
        (21, 'person')
    """

    class_names = VOC_CLASS_NAMES
    num_classes = len(VOC_CLASS_NAMES)
    in_channels = 3

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        from segkit.contracts.fake_data import make_fake_voc

        return {"root": str(make_fake_voc(directory)), "num_workers": 0}

    def __init__(
        self,
        root: str = "data/voc",
        year: str = "2012",
        train_split: str = "train",
        val_split: str = "val",
        download: bool = False,
        crop_size: int | None = None,
        batch_size: int = 1,
        num_workers: int | str = "auto",
        pin_memory: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if batch_size > 1 and crop_size is None:
            raise SegkitError(
                f"data.batch_size={batch_size} with data.crop_size=null: VOC images differ in size; "
                "set data.crop_size (e.g. 320) or data.batch_size=1"
            )
        self.root, self.year, self.download = root, str(year), download
        self.splits = {"train": train_split, "val": val_split}
        self.crop_size = crop_size
        self.mean, self.std = list(mean), list(std)
        check_normalization(self.mean, self.std, self.in_channels)
        self.folds, self.fold = folds, check_fold_settings(folds, fold)

    def prepare_data(self) -> None:
        if self.download:
            VOCSegmentation(self.root, year=self.year, image_set="train", download=True)

    def make_split(self, split: str, images: Sequence[str] | None = None,
                   masks: Sequence[str] | None = None) -> VOCSplit:
        """The ``train`` or ``val`` set: of ``images``/``masks``, else of the configured split's files."""
        train = split == "train"
        transform = segmentation_transforms(
            train, self.mean, self.std, hflip=True, crop_size=self.crop_size if train else None,
            ignore_index=self.ignore_index,
        )
        if images is None or masks is None:
            images, masks = voc_file_lists(self.root, self.year, self.splits[split])
        return VOCSplit(images, masks, transform)

    def setup(self, stage: str | None = None) -> None:
        if self.folds is None:
            if stage in (None, "fit"):
                self.train_set = self.make_split("train")
            self.val_set = self.make_split("val")
            self.test_set = self.val_set
            return
        test_images, test_masks = voc_file_lists(self.root, self.year, self.splits["val"])
        tested = {Path(image).stem for image in test_images}
        # The pool: train_split's images, less any of val_split (e.g. train_split=trainval), the test split.
        pool = [(image, mask) for image, mask in zip(*voc_file_lists(self.root, self.year, self.splits["train"]))
                if Path(image).stem not in tested]
        classes = read_present_classes([mask for _, mask in pool], read_mask, self.ignore_index)
        where = f"data.train_split={self.splits['train']} (less data.val_split) of {self.root}"
        kept, held = fold_split([Path(image).stem for image, _ in pool], classes, self.folds, self.fold, where)
        self.train_set = self.make_split("train", [pool[i][0] for i in kept], [pool[i][1] for i in kept])
        self.val_set = self.make_split("val", [pool[i][0] for i in held], [pool[i][1] for i in held])
        self.test_set = self.make_split("val", test_images, test_masks)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_set, batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.test_set, batch_size=1)
