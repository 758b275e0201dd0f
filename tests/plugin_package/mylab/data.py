"""A data set: grey images with one bright rectangle (class 1) on a dark background (class 0)."""

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from segkit.data.base import SegmentationDataModule


class Rectangles(Dataset):
    def __init__(self, count: int, size: int, seed: int) -> None:
        self.count, self.size, self.seed = count, size, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + int(index))
        top, left = torch.randint(0, self.size // 2, (2,), generator=generator).tolist()
        mask = torch.zeros(self.size, self.size, dtype=torch.int64)
        mask[top:top + self.size // 3, left:left + self.size // 3] = 1
        image = mask[None].float() + 0.3 * torch.randn(1, self.size, self.size, generator=generator)
        return (image - 0.3) / 0.5, mask

    def sample_name(self, index: int) -> str:
        return f"rectangle_{index:03d}"


class RectanglesDataModule(SegmentationDataModule):
    num_classes, class_names, in_channels = 2, ("background", "rectangle"), 1
    mean, std = (0.3,), (0.5,)

    def __init__(self, size: int = 32, train_size: int = 32, val_size: int = 8, batch_size: int = 4,
                 num_workers: int | str = "auto") -> None:
        super().__init__(batch_size, num_workers)
        self.size, self.sizes = size, (train_size, val_size)

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        return {"train_size": 4, "val_size": 2, "batch_size": 2, "num_workers": 0}

    def setup(self, stage: str | None = None) -> None:
        self.train_set = Rectangles(self.sizes[0], self.size, seed=0)
        self.val_set = self.test_set = Rectangles(self.sizes[1], self.size, seed=1)
