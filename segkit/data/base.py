"""Shared DataLoader plumbing for segkit's LightningDataModules."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset


class SegmentationDataModule(L.LightningDataModule):
    """Base for data modules yielding ``(image float (C, H, W), mask long (H, W))`` pairs.

    Subclasses set ``num_classes``, ``class_names``, ``in_channels``, ``mean``/``std`` and
    create ``train_set``, ``val_set`` and ``test_set`` in ``setup``.
    """

    num_classes: int
    class_names: Sequence[str]
    in_channels: int
    ignore_index: int = 255
    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(self, batch_size: int = 16, num_workers: int = 2, pin_memory: bool = False) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.batch_size,  # type: ignore[arg-type]
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
