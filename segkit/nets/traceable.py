"""Traceable forms of the nets: plain modules whose size arithmetic is all tensor ops under
tracing, so that one ONNX / TorchScript trace computes the right logits at every input size.

Each architecture's :meth:`segkit.models.base.SegmentationModule.exportable` picks one (or
returns its net as it is, when the net's forward already traces); :mod:`segkit.inference.export` writes
and checks it.

Example:
    >>> import torch
    >>> from segkit.nets import UNet
    >>> net = UNet(num_classes=2, depth=2, base_width=4).eval()
    >>> PadToMultiple(net, 4)(torch.randn(1, 3, 30, 45)).shape
    torch.Size([1, 2, 30, 45])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segkit.geometry import round_up_to_grid, window_padding
from segkit.nets.densify import densify


class PadToMultiple(nn.Module):
    """``net`` on the input reflect-padded at the bottom/right to a multiple of ``multiple``."""

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net, self.multiple = net, multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        m = self.multiple
        x = F.pad(x, (0, (m - width % m) % m, 0, (m - height % m) % m), mode="reflect")
        return self.net(x)[..., :height, :width]


class DenseWindows(nn.Module):
    """The window classifier ``net`` at every pixel (its ``dilated`` dense form)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net  # owns the parameters that the dense form reads
        self.dense = densify(net, strategy="dilated")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = window_padding(self.dense.window)
        height, width = x.shape[-2], x.shape[-1]
        padded = F.pad(x, (before, after, before, after), mode="reflect")
        return self.dense.valid(padded)[..., :height, :width]


class WholeImageValidUNet(nn.Module):
    """A valid-convolution U-Net in one pass: mirror context on every side, padded at the
    bottom/right up to the next output size the net makes (``overlap_tile(net, x)``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.context, self.multiple = net.context, net.size_multiple
        self.min_output = net.min_input_size - 2 * net.context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        m, smallest, c = self.multiple, self.min_output, self.context
        # Valid outputs are smallest + k * m: the next one up, traced as tensor arithmetic.
        out_h, out_w = round_up_to_grid(height, smallest, m), round_up_to_grid(width, smallest, m)
        padded = F.pad(x, (c, out_w - width + c, c, out_h - height + c), mode="reflect")
        return self.net(padded)[..., :height, :width]


@dataclass
class Exportable:
    """A traceable net computing ``module(images)``, for inputs of at least ``min_side`` px."""

    net: nn.Module
    min_side: int
    note: str
