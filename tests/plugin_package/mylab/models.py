"""An architecture: a plain net and its SegmentationModule."""

from typing import Any, ClassVar

import torch
from torch import nn

from segkit.models.base import SegmentationModule


class ToyNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(width, num_classes, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class ToyModule(SegmentationModule):
    contract_size: ClassVar[dict[str, Any]] = {"width": 4}

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.net = ToyNet(num_classes, in_channels, width)
