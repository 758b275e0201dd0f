"""ISBI 2012 EM segmentation challenge: 30 labelled slices of a Drosophila nerve cord.

The challenge (https://imagej.net/events/isbi-2012-segmentation-challenge) ships
``train-volume.tif`` (30 grey 512x512 serial-section TEM slices, one TIFF page each) and
``train-labels.tif`` (same pages; 0 = membrane, 255 = cell interior). Its test volume's labels
are secret (the evaluation server scores submissions), so segkit holds out some training
slices (``val_slices``, by default the last 3) and uses them for both validation and test.
With ``folds=K`` those slices are the test slices only, and fold ``fold`` validates on a K-th of
the other slices (:mod:`segkit.data.folds`) and trains on the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError
from torchvision import tv_tensors

from segkit.data.folds import check_fold_settings, fold_split, present_classes
from segkit.data.modules.em import EM_MEAN, EM_STD, MembraneDataModule
from segkit.data.samples import SampleDataset
from segkit.errors import SegkitError

ISBI_URL = "https://imagej.net/events/isbi-2012-segmentation-challenge"
VOLUME_FILE = "train-volume.tif"
LABELS_FILE = "train-labels.tif"
DEFAULT_VAL_COUNT = 3


def read_tiff_stack(path: Path) -> list[np.ndarray]:
    """The pages of a multi-page TIFF as 8-bit grey arrays, in file order."""
    if not path.is_file():
        raise SegkitError(
            f"{path}: no such file; download {VOLUME_FILE} and {LABELS_FILE} of the ISBI 2012 EM "
            f"segmentation challenge ({ISBI_URL}) into one folder and set data.root=<that folder>"
        )
    try:
        with Image.open(path) as tif:
            return [np.array(page.convert("L")) for page in ImageSequence.Iterator(tif)]
    except (UnidentifiedImageError, OSError) as error:
        raise SegkitError(f"{path}: not a readable TIFF stack ({error})") from None


def load_isbi_stack(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images, masks)`` as uint8 ``(N, H, W)`` arrays; masks are 1 = membrane, 0 = cell.

    Labels are thresholded at 128 (dark = membrane), which also absorbs lossy-compression noise.

    Example:
        >>> import tempfile
        >>> pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     for name in (VOLUME_FILE, LABELS_FILE):
        ...         pages[0].save(Path(folder) / name, save_all=True, append_images=pages[1:])
        ...     images, masks = load_isbi_stack(folder)
        >>> images.shape, masks[:, 0, 0].tolist()
        ((2, 8, 8), [1, 0])
    """
    volume_path, labels_path = Path(root) / VOLUME_FILE, Path(root) / LABELS_FILE
    volume, labels = read_tiff_stack(volume_path), read_tiff_stack(labels_path)
    if len(volume) != len(labels):
        raise SegkitError(
            f"{volume_path} has {len(volume)} pages but {labels_path} has {len(labels)}; "
            "they must hold the same slices"
        )
    sizes = sorted({page.shape for page in (*volume, *labels)})
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise SegkitError(
            f"{volume_path} and {labels_path}: pages differ in size ({listed}); "
            "every page of both files must have the same size"
        )
    masks = (np.stack(labels) < 128).astype(np.uint8)
    return np.stack(volume), masks


class SliceDataset(SampleDataset):
    """Selected slices of an in-memory stack as ``(image (1, H, W), mask (H, W))`` tensors."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, indices: Sequence[int], transform: Callable) -> None:
        self.images, self.masks = images, masks
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def sample_name(self, index: int) -> str:
        """The slice of the stack (per-image scores)."""
        return f"slice_{self.indices[index]}"

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        slice_index = self.indices[index]
        image = tv_tensors.Image(torch.from_numpy(self.images[slice_index])[None])
        return image, tv_tensors.Mask(torch.from_numpy(self.masks[slice_index]).long())


class ISBI2012DataModule(MembraneDataModule):
    """The ISBI 2012 training stack, split by slice index into train and val (= test).

    Reads ``<root>/train-volume.tif`` and ``<root>/train-labels.tif`` in ``setup`` (about 8 MB,
    kept in memory). Labels become 1 = membrane, 0 = cell, as in
    :class:`segkit.data.modules.em.EMDataModule`, so models move between the two without changes.
    ``em_scores`` has models log the ISBI scores (pixel error, V_rand) of the membrane class.

    Example:
        >>> dm = ISBI2012DataModule(root="data/isbi2012", val_slices=[27, 28, 29])
        >>> dm.num_classes, dm.class_names[dm.membrane_class], dm.in_channels
        (2, 'membrane', 1)
    """

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        from segkit.contracts.fake_data import make_fake_isbi

        return {"root": str(make_fake_isbi(directory, pages=5, size=(37, 45))), "val_slices": [3, 4], "num_workers": 0}

    def __init__(
        self,
        root: str = "data/isbi2012",
        val_slices: Sequence[int] | None = None,
        batch_size: int = 1,
        num_workers: int | str = "auto",
        pin_memory: bool = False,
        augment: bool = True,
        elastic: bool = True,
        mean: Sequence[float] = EM_MEAN,
        std: Sequence[float] = EM_STD,
        em_scores: bool = True,
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, augment, elastic, mean, std, em_scores)
        self.root = root
        self.val_slices = None if val_slices is None else [int(i) for i in val_slices]
        self.folds, self.fold = folds, check_fold_settings(folds, fold)

    def split_indices(self, num_slices: int) -> tuple[list[int], list[int]]:
        """``(train, val)`` slice indices of a stack of ``num_slices``; val defaults to the last 3."""
        val = self.val_slices
        if val is None:
            val = list(range(max(0, num_slices - DEFAULT_VAL_COUNT), num_slices))
        for index in val:
            if not 0 <= index < num_slices:
                raise SegkitError(
                    f"data.val_slices: {index} is out of range; the stack in {self.root} has "
                    f"{num_slices} slices, so use indices 0..{num_slices - 1}"
                )
        train = [i for i in range(num_slices) if i not in set(val)]
        if not train or not val:
            raise SegkitError(
                f"data.val_slices={val}: leaves {len(train)} training and {len(val)} validation "
                f"slices of {num_slices}; both need at least one"
            )
        return train, sorted(set(val))

    def setup(self, stage: str | None = None) -> None:
        images, masks = load_isbi_stack(self.root)
        train, val = self.split_indices(len(images))
        test = val  # the official test labels are secret: test reuses the held-out slices
        if self.folds is not None:
            names = [f"slice_{index:05d}" for index in train]
            classes = [present_classes(masks[index], self.ignore_index) for index in train]
            where = f"the training slices of {self.root} (those not in data.val_slices)"
            kept, held = fold_split(names, classes, self.folds, self.fold, where)
            train, val = [train[i] for i in kept], [train[i] for i in held]
        self.train_set = SliceDataset(images, masks, train, self.make_transform(True))
        self.val_set = SliceDataset(images, masks, val, self.make_transform(False))
        self.test_set = self.val_set
        if self.folds is not None:
            self.test_set = SliceDataset(images, masks, test, self.make_transform(False))
