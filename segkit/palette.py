"""Colour palettes for label maps (PASCAL VOC's, so masks look as people expect)."""

from __future__ import annotations

import torch


def voc_palette(num_colors: int = 256) -> torch.Tensor:
    """The PASCAL VOC colour map as a ``(num_colors, 3)`` uint8 tensor (255 -> light beige).

    Example:
        >>> voc_palette()[:3].tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    palette = torch.zeros(num_colors, 3, dtype=torch.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = torch.tensor([red, green, blue], dtype=torch.uint8)
    return palette


_PALETTE = voc_palette()


def colorize(mask: torch.Tensor) -> torch.Tensor:
    """Class-index mask ``(H, W)`` (values 0..255) -> RGB uint8 image ``(3, H, W)``.

    Example:
        >>> colorize(torch.tensor([[0, 1], [255, 2]])).shape
        torch.Size([3, 2, 2])
    """
    return _PALETTE[mask.long().clamp(0, 255)].permute(2, 0, 1)
