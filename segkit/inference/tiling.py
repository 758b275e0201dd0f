"""Predict images of any size window by window: sliding windows and the U-Net's overlap-tile.

One function serves both kinds of net:

- same-size nets (the practical U-Net, FCNs, the dense patch CNN): windows of ``window``
  pixels, ``overlap`` between neighbours, logits averaged where windows overlap, uniformly
  (``constant``) or weighted towards window centres (``gaussian``);
- valid-convolution nets (:class:`segkit.nets.PaperUNet`): each ``window`` of output needs
  ``context`` more pixels of input on every side; at the image border that context is
  mirrored (U-Net Section 2, Fig. 2), and window positions are multiples of the net's pooling
  stride, so every tile computes exactly what one pass over the whole mirror-padded image
  computes at the same pixels (``overlap_tile``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from segkit.geometry import (
    mirror_pad,
    smallest_valid_output,
    valid_output_size,
    window_starts,
    window_stride,
)

Blending = Literal["constant", "gaussian"]
Net = Callable[[torch.Tensor], torch.Tensor]


def blend_weights(height: int, width: int, blending: Blending, sigma_scale: float = 0.125) -> torch.Tensor:
    """Per-pixel weights ``(height, width)`` of one window's logits: ones, or a Gaussian of std
    ``sigma_scale * side`` centred on the window (edges of a window see less context, so
    their logits count less where windows overlap; nnU-Net's choice of 1/8)."""
    if blending == "constant":
        return torch.ones(height, width)
    if blending != "gaussian":
        raise ValueError(f"blending must be 'constant' or 'gaussian', got {blending!r}")
    axes = []
    for side in (height, width):
        position = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
        axes.append(torch.exp(-0.5 * (position / (sigma_scale * side)) ** 2))
    weights = axes[0][:, None] * axes[1][None, :]
    # Keep every pixel's weight positive, so a pixel covered by one window edge only still counts.
    return (weights / weights.max()).clamp_min(1e-3).float()


@dataclass(frozen=True)
class WindowGrid:
    """Where the windows of one image go: output windows of ``window_h x window_w`` pixels at
    rows ``ys`` and columns ``xs`` (the last may overhang the image), each computed from
    ``context`` more pixels of input on every side."""

    height: int
    width: int
    window_h: int
    window_w: int
    ys: list[int]
    xs: list[int]
    context: int = 0

    @classmethod
    def plan(cls, height: int, width: int, window: tuple[int, int], overlap: float = 0.0, context: int = 0,
             multiple: int = 1) -> WindowGrid:
        """Windows overlapping by ``overlap``, placed every multiple of ``multiple`` pixels."""
        window_h, window_w = window
        ys = window_starts(height, window_h, window_stride(window_h, overlap, multiple))
        xs = window_starts(width, window_w, window_stride(window_w, overlap, multiple))
        return cls(height, width, window_h, window_w, ys, xs, context)

    @property
    def extent(self) -> tuple[int, int]:
        """``(rows, columns)`` the windows cover, overhang included."""
        return self.ys[-1] + self.window_h, self.xs[-1] + self.window_w


# read_rows(top, bottom): input rows [top, bottom) of the images (N, C_in, rows, extent_w +
# 2 * context), columns from -context, mirrored wherever they fall outside the image.
RowReader = Callable[[int, int], torch.Tensor]


def banded_logits(
    net: Net, read_rows: RowReader, grid: WindowGrid, blending: Blending = "constant", batch_size: int = 1,
    on_window: Callable[[], None] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """The one sliding-window engine: blended logits of the image, a band of rows at a time.

    Visits the grid row of windows by row of windows (``batch_size`` windows per net call)
    and yields ``(first row, logits (N, C, rows, width))`` as soon as no later window reaches
    those rows, so only one band of ``window_h`` rows of logits is ever held. A net may return
    windows of its input's size (the context is then cropped off) or ``2 * context`` smaller.
    """
    weights: torch.Tensor | None = None
    band: torch.Tensor | None = None
    total: torch.Tensor | None = None
    band_top, c = 0, grid.context
    height, width, window_h, window_w = grid.height, grid.width, grid.window_h, grid.window_w
    extent_w = grid.extent[1]
    for row, y in enumerate(grid.ys):
        strip = read_rows(y - c, y + window_h + c)
        count = strip.shape[0]
        for start in range(0, len(grid.xs), batch_size):
            batch_xs = grid.xs[start:start + batch_size]
            logits = net(torch.cat([strip[..., x:x + window_w + 2 * c] for x in batch_xs]))
            if c and logits.shape[-2:] == (window_h + 2 * c, window_w + 2 * c):  # a same-size net
                logits = logits[..., c:c + window_h, c:c + window_w]
            if logits.shape[-2:] != (window_h, window_w):
                raise ValueError(
                    f"the net turned a {window_h + 2 * c}x{window_w + 2 * c} window into "
                    f"{tuple(logits.shape[-2:])} logits, expected {window_h}x{window_w} (context={c})"
                )
            if band is None or total is None or weights is None:
                weights = blend_weights(window_h, window_w, blending).to(logits.device, logits.dtype)
                band = logits.new_zeros(count, logits.shape[1], window_h, extent_w)
                total = logits.new_zeros(window_h, extent_w)
            for i, x in enumerate(batch_xs):
                band[..., y - band_top:y - band_top + window_h, x:x + window_w] += logits[i * count:(i + 1) * count] * weights
                total[y - band_top:y - band_top + window_h, x:x + window_w] += weights
                if on_window is not None:
                    on_window()
        assert band is not None and total is not None
        # Rows above the next row of windows are final: hand them out, move the band down.
        done = min(grid.ys[row + 1] if row + 1 < len(grid.ys) else height, height)
        rows = done - band_top
        yield band_top, band[..., :rows, :width] / total[:rows, :width]
        band = torch.cat([band[..., rows:, :], band.new_zeros(*band.shape[:2], rows, extent_w)], dim=2)
        total = torch.cat([total[rows:], total.new_zeros(rows, extent_w)])
        band_top = done


def sliding_window_logits(
    net: Net,
    images: torch.Tensor,
    window: int | tuple[int, int],
    overlap: float = 0.25,
    blending: Blending = "constant",
    context: int = 0,
    multiple: int = 1,
) -> torch.Tensor:
    """Logits ``(N, C, H, W)`` of ``images`` ``(N, C_in, H, W)``, computed window by window
    (:func:`banded_logits` over the whole mirror-padded tensor).

    Args:
        net: maps an input window to logits; its output is ``2 * context`` smaller than its input.
        window: output window side(s) in pixels.
        overlap: fraction of a window shared with its neighbour (0 for valid nets: overlapping
            tiles would compute the same values twice).
        blending: how overlapping windows' logits are averaged.
        context: input pixels a valid net needs around its output (92 for the paper U-Net).
        multiple: window positions are multiples of this (the net's total pooling stride, so
            tiles share the whole image's pooling grid; 1 for same-size nets).

    Example:
        >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
        >>> image = torch.randn(1, 1, 50, 70)
        >>> tiled = sliding_window_logits(net, image, window=32, overlap=0.5)
        >>> tiled.shape
        torch.Size([1, 2, 50, 70])
    """
    height, width = images.shape[-2:]
    grid = WindowGrid.plan(height, width, (window, window) if isinstance(window, int) else window,
                           overlap, context, multiple)
    extent_h, extent_w = grid.extent
    padded = mirror_pad(images, context, extent_w - width + context, context, extent_h - height + context)
    bands = banded_logits(net, lambda top, bottom: padded[..., top + context:bottom + context, :], grid, blending)
    return torch.cat([logits for _, logits in bands], dim=2)


def overlap_tile(net: torch.nn.Module, images: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """Logits of the same size as ``images`` from a valid-convolution U-Net
    (:class:`segkit.nets.PaperUNet`), with mirrored context at the borders.

    ``tile=None``: one pass over the whole mirror-padded image (padded up to a size the net
    takes). ``tile=T``: output tiles of ``T`` pixels (``T + 2 * context`` must be a valid input
    side, e.g. 388 for the paper's 572 tiles) placed at multiples of ``2**net.depth`` pixels
    (the net's pooling stride: 16 at the paper's depth 4); the result equals the single pass
    up to floating-point rounding (the same sums in another order).

    Example:
        >>> from segkit.nets import PaperUNet
        >>> net = PaperUNet(num_classes=2, in_channels=1, depth=2, base_width=2).eval()
        >>> image = torch.randn(1, 1, 45, 70, dtype=torch.float64)
        >>> net = net.double()
        >>> whole, tiled = overlap_tile(net, image), overlap_tile(net, image, tile=20)
        >>> whole.shape, bool((whole - tiled).abs().max() < 1e-10)
        (torch.Size([1, 2, 45, 70]), True)
    """
    context, depth = net.context, net.depth  # type: ignore[union-attr]
    height, width = images.shape[-2:]
    if tile is None:
        window: tuple[int, int] = (smallest_valid_output(height, context, depth), smallest_valid_output(width, context, depth))
    else:
        if valid_output_size(tile + 2 * context, depth) != tile:
            suggestion = smallest_valid_output(tile, context, depth)
            raise ValueError(f"tile={tile}: the net cannot take {tile + 2 * context}-px inputs; use tile={suggestion}")
        window = (tile, tile)
    return sliding_window_logits(net, images, window, overlap=0.0, context=context, multiple=2**depth)
