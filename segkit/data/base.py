"""Shared DataLoader plumbing for segkit's LightningDataModules."""

from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from segkit.data.files.intensity import IntensityScaling
from segkit.data.sampling import EpochSampler, ResumableDataLoader
from segkit.data.spec import DataSpec
from segkit.errors import SegkitError


def whole_number(key: str, value: object, minimum: int, what: str) -> int:
    """``value`` if it is an integer of at least ``minimum``, else a :class:`SegkitError` naming
    ``data.<key>``, the value and ``what`` it should be.

    Example:
        >>> whole_number("batch_size", 0, 1, "images per batch")
        Traceback (most recent call last):
        ...
        segkit.errors.SegkitError: data.batch_size=0: use a whole number of images per batch, 1 or more
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        shown = repr(value) if isinstance(value, str) else value
        raise SegkitError(f"data.{key}={shown}: use a whole number of {what}, {minimum} or more")
    return value


def check_normalization(mean: Sequence[float], std: Sequence[float], channels: int) -> None:
    """Refuse ``data.mean``/``data.std`` that are not one finite number per channel, or a
    ``std`` of 0 or less (images are divided by it).

    Example:
        >>> check_normalization([0.5], [0.0], 1)
        Traceback (most recent call last):
        ...
        segkit.errors.SegkitError: data.std=[0.0]: every value must be > 0 (images are divided by it); ...
    """
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise SegkitError(
                f"data.{key}={list(values)}: {len(values)} values for data.in_channels={channels}; "
                "give one per channel, or null for the default"
            )
        try:
            numbers = [float(value) for value in values]
        except (TypeError, ValueError):
            raise SegkitError(f"data.{key}={list(values)}: give numbers, one per channel") from None
        if not all(math.isfinite(number) for number in numbers):
            raise SegkitError(f"data.{key}={list(values)}: every value must be a finite number")
    if any(float(value) <= 0 for value in std):
        raise SegkitError(
            f"data.std={list(std)}: every value must be > 0 (images are divided by it); "
            "e.g. 0.25, or null for the default"
        )


def resolve_num_workers(num_workers: int | str) -> int:
    """``"auto"``: no worker processes on a machine of 1-2 cores, else one per core but one (max 8).

    On 2 cores a worker process competes with the two threads that run the net and slows a
    step more than the loading it takes over (measured: 0.13 s/step with 0 workers, 0.16 s
    with 1, 0.17 s with 2, for the default U-Net on shapes).

    Example:
        >>> resolve_num_workers(3)
        3
    """
    if num_workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return 0 if cores <= 2 else min(8, cores - 1)
    return whole_number("num_workers", num_workers, 0, "loader processes (or auto)")


class SegmentationDataModule(L.LightningDataModule):
    """Base for data modules yielding ``(image float (C, H, W), mask long (H, W))`` pairs.

    Subclasses set ``num_classes``, ``class_names``, ``in_channels``, ``mean``/``std`` (and
    ``intensity``, ``membrane_class`` where they apply) in ``__init__``, so that :meth:`spec`,
    what the model is built from, is known before ``setup``; and create ``train_set``,
    ``val_set`` and ``test_set`` in ``setup``.
    """

    num_classes: int
    class_names: Sequence[str]
    in_channels: int
    ignore_index: int = 255
    # The class whose ISBI 2012 scores (pixel error, V_rand) the model logs; None: none logged.
    membrane_class: int | None = None
    # Per-channel normalisation after the raw-pixel scaling (None: unknown to the data module).
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    # How raw pixels become about [0, 1] (folder data, data.intensity); None: 8-bit / 255.
    intensity: IntensityScaling | None = None
    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(self, batch_size: int = 16, num_workers: int | str = "auto", pin_memory: bool = False) -> None:
        super().__init__()
        self.batch_size = whole_number("batch_size", batch_size, 1, "images per batch")
        self.num_workers = resolve_num_workers(num_workers)
        self.pin_memory = pin_memory

    def _evaluation_loader(self, dataset: Dataset, batch_size: int | None = None) -> DataLoader:
        """``dataset`` in order, every sample once (shared out among DDP ranks by
        :func:`evaluation_sampler`), in batches of ``batch_size`` (default ``self.batch_size``)."""
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            sampler=evaluation_sampler(dataset),
            **self._worker_options(),
            # Its own generator: a new iterator draws a seed for its workers, which would
            # otherwise come from the global RNG and shift the training's dropout after each
            # validation by a different amount with and without (persistent) workers.
            generator=torch.Generator().manual_seed(0),
        )

    def _worker_options(self) -> dict[str, Any]:
        """Loader process options shared by the training and evaluation loaders."""
        return {"num_workers": self.num_workers, "pin_memory": self.pin_memory,
                "persistent_workers": self.num_workers > 0}

    def _train_loader(
        self, dataset: Dataset, sampler: EpochSampler | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> ResumableDataLoader:
        """Shuffled training batches in an order fixed by ``(seed, epoch)``, resumable mid-epoch.

        The default seed is the run's (``seed_everything(cfg.seed)`` sets ``torch.initial_seed``).
        """
        if sampler is None:
            sampler = EpochSampler(len(dataset), seed=torch.initial_seed() % 2**31)  # type: ignore[arg-type]
        batch_size = self.batch_size
        return ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            **self._worker_options(),
            # Keep a short last training batch only when it is the only one.
            drop_last=len(sampler) > batch_size,
        )

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        """Config values that make this data module tiny for the data-module contract
        (:mod:`segkit.contracts`), after writing any files it reads under ``directory``; merged
        over its config. Override it when the defaults read files or take long to set up."""
        return {}

    def spec(self) -> DataSpec:
        """What this data tells the model (:class:`~segkit.data.spec.DataSpec`)."""
        return DataSpec.of(self.num_classes, self.class_names, self.in_channels, self.ignore_index,
                           self.mean, self.std, None if self.intensity is None else self.intensity.to_dict(),
                           self.membrane_class)

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.test_set)


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """Under DDP, each rank gets a disjoint share of ``dataset`` and every sample is scored
    exactly once: Lightning's default DistributedSampler would pad the last batch with repeated
    samples and count them twice in the confusion matrix. ``None`` (sequential) otherwise.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return UnrepeatedDistributedSampler(dataset, shuffle=False)
    return None
