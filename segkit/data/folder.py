"""Users' own data from a folder tree: ``data=folder data.root=PATH data.num_classes=K``.

Layout: ``PATH/{train,val,test}/{images,masks}/<name>.<ext>``; an image and its mask share a
name stem (``images/a.jpg`` + ``masks/a.png``). Images are PNG, JPEG or TIFF, RGB or grayscale
(8-bit); masks are PNG or TIFF of class indices: one channel (L or I mode), or palette PNGs
(P mode, read as indices, not colours). The value ``ignore_index`` (255) marks ignored pixels.
``test/`` is optional; without it, test uses val. Hidden (dot) files are skipped.

Validation, so that a large data set is not read in full before training starts:

1. ``setup``, every file, directory listings only: the layout, file types, image/mask pairing
   by name and empty splits.
2. ``setup``, every file, headers only (``validate="header"``, the default): PIL's
   ``Image.open`` reads a file's header, not its pixels, which gives the mode and size; so
   non-images and image/mask size mismatches stop the run before the first step. It costs one
   small read per file (about 0.1 ms a pair on a local disk, measured on 1000 JPEG/PNG pairs);
   ``validate="lazy"`` skips it (e.g. millions of files, or slow network storage).
3. When a sample is loaded: decoding (truncated or corrupt files), the checks of 2 again, and
   the mask values (< ``num_classes`` or ``ignore_index``). A bad file stops the run when it is
   first reached, with an error naming it.

Every problem is a one-line :class:`SegkitError` naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from segkit.data.base import SegmentationDataModule, evaluation_sampler
from segkit.data.folder_index import (
    Pair,
    check_headers,
    check_pair,
    check_root,
    find_pairs,
    open_image,
    read_class_names,
    unreadable,
)
from segkit.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from segkit.data.transforms import segmentation_transforms
from segkit.errors import SegkitError

# Grey inputs: the same normalisation as data=em and data=isbi2012 ([0, 1] -> [-2, 2]).
GREY_MEAN, GREY_STD = (0.5,), (0.25,)
VALIDATE_MODES = ("header", "lazy")


class SampleError(SegkitError):
    """A :class:`SegkitError` met while loading a sample; keeps its one-line message when a
    DataLoader worker re-raises it in the main process (torch passes the worker's traceback as
    the message of a new exception of the same class)."""

    def __init__(self, message: str) -> None:
        prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught "):
            original = [line for line in message.splitlines() if line.startswith(prefix)]
            message = original[-1][len(prefix):] if original else message
        super().__init__(message)


def check_mask_values(mask: torch.Tensor, path: Path, num_classes: int, ignore_index: int) -> None:
    """Raise unless every value of ``mask`` is a class index or ``ignore_index``."""
    bad = mask[(mask < 0) | ((mask >= num_classes) & (mask != ignore_index))]
    if bad.numel():
        values = bad.unique().tolist()
        shown = ", ".join(map(str, values[:3])) + (", ..." if len(values) > 3 else "")
        more = ""
        if max(values) >= num_classes:
            more = f"set data.num_classes={max(values) + 1} if it is a class, or "
        raise SegkitError(
            f"{path}: mask value {shown} is not a class (0..{num_classes - 1}) nor "
            f"data.ignore_index={ignore_index}; {more}map the value to {ignore_index} (ignored)"
        )


def load_sample(
    pair: Pair, in_channels: int, num_classes: int, ignore_index: int
) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Decode and check one ``(image, mask)`` pair: uint8 ``(in_channels, H, W)``, int64 ``(H, W)``."""
    with open_image(pair[0]) as image, open_image(pair[1]) as mask:
        check_pair(image, mask, pair)
        for opened, path in ((image, pair[0]), (mask, pair[1])):
            try:
                opened.load()
            except (OSError, SyntaxError, ValueError, EOFError) as error:
                raise unreadable(path, error) from None
        pixels = TF.pil_to_tensor(image.convert("RGB" if in_channels == 3 else "L"))
        # np.array of a palette ("P") image gives its indices, not colours.
        indices = torch.from_numpy(np.array(mask).astype(np.int64))
    check_mask_values(indices, pair[1], num_classes, ignore_index)
    return tv_tensors.Image(pixels), tv_tensors.Mask(indices)


class FolderSplit(Dataset):
    """The ``(image, mask)`` pairs of one split as tensors, through a joint ``transform``."""

    def __init__(self, pairs: Sequence[Pair], transform: Callable, in_channels: int, num_classes: int,
                 ignore_index: int) -> None:
        self.pairs, self.transform = list(pairs), transform
        self.in_channels, self.num_classes, self.ignore_index = in_channels, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            image, mask = load_sample(self.pairs[index], self.in_channels, self.num_classes, self.ignore_index)
        except SegkitError as error:
            raise SampleError(str(error)) from None
        image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class FolderDataModule(SegmentationDataModule):
    """Segmentation data from ``root/{train,val,test}/{images,masks}`` (see the module docstring).

    Training takes random ``crop_size`` crops (padded with ``ignore_index`` where an image is
    smaller), so differently sized images batch; validation and test run on whole images, one
    at a time. ``test/`` is optional: without it, test reuses val. Class names come from
    ``class_names``, else ``root/classes.txt`` (one per line), else ``class_0..class_{K-1}``.

    ``in_channels=3`` reads images as RGB (grey files are replicated); ``in_channels=1`` reads
    them as grey (colour files are converted to luma). ``mean``/``std`` default to ImageNet's
    statistics for 3 channels, what the pretrained VGG16 of model=fcn expects, and to
    ``[0.5]``/``[0.25]`` for 1 channel (as data=em); your data's own statistics may train better.

    Example:
        >>> dm = FolderDataModule(root="data/mine", num_classes=3, class_names=["sky", "road", "car"])
        >>> dm.num_classes, dm.class_names[2], dm.in_channels, dm.mean
        (3, 'car', 3, [0.485, 0.456, 0.406])
    """

    def __init__(
        self,
        root: str,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        in_channels: int = 3,
        ignore_index: int = 255,
        crop_size: int | None = 256,
        batch_size: int = 8,
        num_workers: int | str = "auto",
        pin_memory: bool = False,
        hflip: bool = True,
        vflip: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        validate: str = "header",
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if num_classes < 2:
            raise SegkitError(f"data.num_classes={num_classes}: needs at least 2 (e.g. background and object)")
        if in_channels not in (1, 3):
            raise SegkitError(f"data.in_channels={in_channels}: use 3 (RGB) or 1 (grayscale)")
        if validate not in VALIDATE_MODES:
            raise SegkitError(f"data.validate={validate!r}: use 'header' (check sizes at setup) or 'lazy'")
        if batch_size > 1 and crop_size is None:
            raise SegkitError(
                f"data.batch_size={batch_size} with data.crop_size=null: images may differ in size; "
                "set data.crop_size (e.g. 256) or data.batch_size=1"
            )
        self.root = Path(root).expanduser().absolute()
        self.num_classes, self.in_channels, self.ignore_index = num_classes, in_channels, ignore_index
        names = None if class_names is None else list(class_names)
        self.class_names = read_class_names(self.root, num_classes, names)
        self.crop_size, self.hflip, self.vflip, self.validate = crop_size, hflip, vflip, validate
        default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else (GREY_MEAN, GREY_STD)
        self.mean = list(default_mean if mean is None else mean)
        self.std = list(default_std if std is None else std)
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != in_channels:
                raise SegkitError(
                    f"data.{key}={values}: {len(values)} values for data.in_channels={in_channels}; "
                    "give one per channel, or null for the default"
                )
        self._sets: dict[str, FolderSplit] = {}

    def make_split(self, name: str, pairs: Sequence[Pair]) -> FolderSplit:
        train = name == "train"
        transform = segmentation_transforms(
            train, self.mean, self.std, hflip=self.hflip, vflip=self.vflip,
            crop_size=self.crop_size if train else None, ignore_index=self.ignore_index,
        )
        return FolderSplit(pairs, transform, self.in_channels, self.num_classes, self.ignore_index)

    def setup(self, stage: str | None = None) -> None:
        check_root(self.root)
        has_test = (self.root / "test").exists()
        names = ["train", "val"] if stage in (None, "fit") else ["val"]
        if stage in (None, "test") and has_test:
            names.append("test")
        # Pairing of every split first (listings only), then the slower header pass.
        pairs = {name: find_pairs(self.root, name) for name in names if name not in self._sets}
        for name, split_pairs in pairs.items():
            if self.validate == "header":
                check_headers(split_pairs)
            self._sets[name] = self.make_split(name, split_pairs)
        if "train" in self._sets:
            self.train_set = self._sets["train"]
        self.val_set = self._sets["val"]
        self.test_set = self._sets.get("test", self.val_set)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False, batch_size=1, sampler=evaluation_sampler(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False, batch_size=1, sampler=evaluation_sampler(self.test_set))
