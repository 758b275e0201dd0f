"""Scores of each image: one confusion matrix per image, its mIoU and pixel accuracy, and the
files ``segkit-eval`` writes from them (``per_image.csv``, ``per_image_confusion.npz``).

The convention is the dataset-level matrix's (:mod:`segkit.scoring.metrics`): rows are ground
truth, columns predictions, pixels whose target is the ignore index (or outside ``[0, K)``) are
left out, so the per-image matrices of a split sum to its global matrix exactly.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from segkit.scoring.metrics import scores_from_confusion

# The columns of per_image.csv and the arrays of per_image_confusion.npz (segkit-report reads them).
CSV_COLUMNS = ("index", "file", "mIoU", "pixel_acc")
NPZ_CONFUSION, NPZ_FILES = "confusion", "files"


def confusion_per_image(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """One confusion matrix per image: ``(N, K, K)`` int64 counts from class indices
    ``preds`` and targets ``target`` (both ``(N, H, W)``), rows = truth, columns = prediction.

    Example:
        >>> preds = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [0, 0]]])
        >>> target = torch.tensor([[[0, 1], [255, 0]], [[1, 1], [0, 0]]])
        >>> confusion_per_image(preds, target, 2).tolist()
        [[[1, 1], [0, 1]], [[2, 0], [2, 0]]]
    """
    n, k = preds.shape[0], num_classes
    target = target.long()
    valid = (target >= 0) & (target < k)
    if ignore_index is not None:
        valid &= target != ignore_index
    image = torch.arange(n, device=preds.device).view(n, *([1] * (preds.ndim - 1)))
    # Invalid pixels go to one extra bin that is dropped (as SegmentationMetrics.update does).
    bins = torch.where(valid, image * k * k + target * k + preds.long(), n * k * k)
    counts = torch.bincount(bins.flatten(), minlength=n * k * k + 1)
    return counts[:-1].reshape(n, k, k)


def image_scores(confusion: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(mIoU, pixel_acc)`` of each ``(K, K)`` matrix of ``confusion`` ``(N, K, K)``, as
    :func:`~segkit.scoring.metrics.scores_from_confusion` scores a split's matrix.

    An image's mIoU averages the IoU of the classes present in its truth or its prediction;
    both are NaN for an image without a scored pixel.

    Example:
        >>> miou, acc = image_scores(np.array([[[3, 1], [0, 0]], [[0, 0], [0, 0]]]))
        >>> miou.round(4).tolist(), acc.tolist()
        ([0.375, nan], [0.75, nan])
    """
    scores = scores_from_confusion(torch.as_tensor(confusion).cpu())
    return scores["mIoU"].numpy(), scores["pixel_acc"].numpy()


def sample_name(dataset: Dataset | None, index: int) -> str:
    """The name of sample ``index``: what the dataset's own ``sample_name(index)`` method says
    (the data contract's naming: file names of folder pairs and VOC, ISBI slices; through
    ``Subset``), else ``#<index>``.

    Example:
        >>> class Split(Dataset):
        ...     def sample_name(self, index: int) -> str:
        ...         return ["a.png", "b.png"][index]
        >>> sample_name(Split(), 1), sample_name(Subset(Split(), [1, 0]), 1), sample_name(None, 7)
        ('b.png', 'a.png', '#7')
    """
    inner, at = dataset, index
    while isinstance(inner, Subset):
        inner, at = inner.dataset, int(inner.indices[at])
    named = getattr(inner, "sample_name", None)
    return str(named(at)) if callable(named) else f"#{index}"


class PerImageTable:
    """The per-image matrices of a split, ``confusion`` ``(N, K, K)``, with each image's dataset
    ``indices`` and ``files``; kept sorted by index.

    Example:
        >>> table = PerImageTable([1, 0], ["b.png", "a.png"], np.array([[[0, 2], [0, 0]], [[1, 0], [0, 1]]]))
        >>> table.indices.tolist(), table.files, table.total().tolist()
        ([0, 1], ['a.png', 'b.png'], [[1, 2], [0, 1]])
    """

    def __init__(self, indices: Sequence[int], files: Sequence[str], confusion: np.ndarray) -> None:
        order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
        self.indices = np.asarray(indices, dtype=np.int64)[order]
        self.files = [str(files[i]) for i in order]
        self.confusion = np.asarray(confusion, dtype=np.int64)[order]

    def __len__(self) -> int:
        return len(self.indices)

    def total(self) -> np.ndarray:
        """The split's global confusion matrix: the sum over images."""
        return self.confusion.sum(axis=0)

    def write_csv(self, path: Path, extra_columns: Sequence[str] = (),
                  extra: Mapping[int, Sequence[float]] | None = None) -> Path:
        """``per_image.csv``: ``index, file, mIoU, pixel_acc`` per image (NaN: nothing scored),
        then ``extra_columns`` with each image's values from ``extra`` (by index; NaN if absent)."""
        miou, acc = image_scores(self.confusion)
        missing = [float("nan")] * len(extra_columns)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*CSV_COLUMNS, *extra_columns])
            for row in zip(self.indices.tolist(), self.files, miou.tolist(), acc.tolist()):
                writer.writerow([*row, *(extra or {}).get(row[0], missing)])
        return path

    def write_npz(self, path: Path) -> Path:
        """``per_image_confusion.npz``: ``confusion`` int64 ``(N, K, K)`` and ``files`` ``(N,)``."""
        np.savez_compressed(path, **{NPZ_CONFUSION: self.confusion, NPZ_FILES: np.asarray(self.files, dtype=str)})
        return path


def read_per_image_npz(path: Path) -> tuple[np.ndarray, list[str]]:
    """``(confusion (N, K, K), files)`` of a ``per_image_confusion.npz``."""
    with np.load(path, allow_pickle=False) as data:
        return data[NPZ_CONFUSION], [str(name) for name in data[NPZ_FILES]]


def merge_tables(parts: Sequence[dict[str, Any]], num_classes: int) -> PerImageTable:
    """One table from per-rank parts ``{"indices", "files", "confusion"}`` (DDP shares)."""
    indices = [i for part in parts for i in part["indices"]]
    files = [f for part in parts for f in part["files"]]
    chunks = [part["confusion"] for part in parts if len(part["indices"])]
    confusion = np.concatenate(chunks) if chunks else np.zeros((0, num_classes, num_classes), np.int64)
    return PerImageTable(indices, files, confusion)
