"""k-fold cross-validation (``data.folds=K``, ``data.fold=k``): which images fold ``k`` validates on.

A data module's *pool* is the labelled images it trains and validates on, never its test split
(the test split stays as it is). :func:`assign_folds` divides the pool into ``K`` parts; fold
``k`` validates on part ``k`` and trains on the other ``K - 1``, as nnU-Net's 5-fold
cross-validation does over all its training cases.

The parts depend on the images' names and classes only: not on the order files are listed in,
the machine, the Python version or the run's ``seed`` (so a ``seed`` sweep over the folds keeps
the same folds). Where classes allow, they are stratified: the images holding a class that few
images hold are dealt to different folds.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from segkit.errors import SegkitError

# The shuffle's fixed seed: not the run's seed, so that folds stay put when seeds are swept.
FOLD_SEED = 0
Item = TypeVar("Item")


def assign_folds(names: Sequence[str], classes: Sequence[Collection[int]], folds: int,
                 seed: int = FOLD_SEED) -> list[int]:
    """The fold (``0..folds-1``) of each image, given its unique ``name`` and the classes its mask holds.

    The images are shuffled by a hash of ``(seed, name)`` (the same order on any machine, whatever
    order they came in), stably reordered by their rarest class (the class held by fewest images
    of the pool; images holding none come last), then dealt round-robin. So part sizes differ by
    at most one, and images whose rarest class is one held by up to ``folds`` images land in as
    many different folds.

    Example:
        >>> names = ["a", "b", "c", "d", "e", "f", "g"]
        >>> classes = [{0, 1}, {0, 1, 2}, {0, 1}, {0}, {0, 1}, {0, 1, 2}, {1}]  # class 2: b and f only
        >>> folds = assign_folds(names, classes, 3)
        >>> folds
        [0, 1, 1, 2, 2, 0, 0]
        >>> folds[1] != folds[5], sorted(Counter(folds).values())
        (True, [2, 2, 3])
        >>> assign_folds(names[::-1], classes[::-1], 3) == folds[::-1]  # listing order does not matter
        True
    """
    if folds < 1:
        raise ValueError(f"folds={folds}: need at least 1")
    if len(set(names)) != len(names):
        raise ValueError("names must be unique: they decide the folds")
    held = Counter(c for present in classes for c in set(present))

    def rarest(index: int) -> tuple[int, int]:
        # (how many images hold it, the class); no class at all sorts after every class.
        return min(((held[c], c) for c in classes[index]), default=(len(names) + 1, 0))

    def shuffled(index: int) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}:{names[index]}".encode()).hexdigest(), names[index]

    order = sorted(sorted(range(len(names)), key=shuffled), key=rarest)
    assigned = [0] * len(names)
    for position, index in enumerate(order):
        assigned[index] = position % folds
    return assigned


def check_fold_settings(folds: int | None, fold: int | None) -> int | None:
    """The fold to validate on (``fold``; 0 for ``None`` when ``folds`` is set, None without
    folds); refuse settings that name no fold (a one-line :class:`SegkitError`).

    Example:
        >>> check_fold_settings(5, None), check_fold_settings(None, None)
        (0, None)
        >>> check_fold_settings(5, 5)
        Traceback (most recent call last):
        ...
        segkit.errors.SegkitError: data.fold=5: use a fold in 0..4 (data.folds=5)
    """
    if folds is None:
        if fold not in (None, 0):
            raise SegkitError(f"data.fold={fold!r} without data.folds: set data.folds (e.g. data.folds=5) to "
                              "cross-validate, or leave data.fold unset")
        return None
    if fold is None:
        fold = 0
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise SegkitError(f"data.folds={folds!r}: use 2 or more folds (e.g. 5), or null for the data set's own "
                          "train/val split")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise SegkitError(f"data.fold={fold!r}: use a fold in 0..{folds - 1} (data.folds={folds})")
    return fold


def fold_split(names: Sequence[str], classes: Sequence[Collection[int]], folds: int, fold: int,
               pool: str) -> tuple[list[int], list[int]]:
    """``(training, validation)`` indices into the pool for ``fold`` of ``folds`` (:func:`assign_folds`);
    ``pool`` names the pool in the error when it holds fewer images than folds.

    Example:
        >>> fold_split(["a", "b", "c", "d"], [{0}, {0}, {0, 1}, {0}], 2, 0, "train/")
        ([1, 3], [0, 2])
    """
    if folds > len(names):
        fix = f"use data.folds={len(names)} or fewer" if len(names) >= 2 else "add images"
        raise SegkitError(f"data.folds={folds}: {pool} holds {len(names)} image(s), fewer than the folds; {fix}")
    assigned = assign_folds(names, classes, folds)
    return ([i for i, f in enumerate(assigned) if f != fold], [i for i, f in enumerate(assigned) if f == fold])


def present_classes(mask: np.ndarray, ignore_index: int) -> frozenset[int]:
    """The classes a mask holds; ``ignore_index`` pixels do not count.

    Example:
        >>> sorted(present_classes(np.array([[0, 255], [2, 2]]), 255))
        [0, 2]
    """
    return frozenset(int(value) for value in np.unique(mask) if value != ignore_index)


def read_present_classes(items: Sequence[Item], read_mask: Callable[[Item], np.ndarray],
                         ignore_index: int) -> list[frozenset[int]]:
    """:func:`present_classes` of each item's mask, ``read_mask`` run in threads (decoders release the GIL)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as threads:
        return list(threads.map(lambda item: present_classes(read_mask(item), ignore_index), items))
