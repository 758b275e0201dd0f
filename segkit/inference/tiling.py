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


def axis_weights(side: int, blending: Blending, sigma_scale: float = 0.125) -> torch.Tensor:
    """One axis of a window's blending weights: ones, or a Gaussian of std ``sigma_scale * side``
    centred on the window, at least ``sqrt(1e-3)`` (edges of a window see less context, so their
    logits count less where windows overlap; nnU-Net's sigma of 1/8)."""
    if blending == "constant":
        return torch.ones(side)
    if blending != "gaussian":
        raise ValueError(f"blending must be 'constant' or 'gaussian', got {blending!r}")
    position = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    weights = torch.exp(-0.5 * (position / (sigma_scale * side)) ** 2)
    # Every pixel's weight stays positive (>= 1e-3 for the product), so a pixel covered by one
    # window edge only still counts.
    return (weights / weights.max()).clamp_min(1e-3 ** 0.5).float()


def blend_weights(height: int, width: int, blending: Blending, sigma_scale: float = 0.125) -> torch.Tensor:
    """Per-pixel weights ``(height, width)`` of one window's logits: the outer product of
    :func:`axis_weights`. Separable, so the sum of all windows' weights at a pixel is a row
    factor times a column factor, and never needs to be stored per pixel."""
    return axis_weights(height, blending, sigma_scale)[:, None] * axis_weights(width, blending, sigma_scale)[None, :]


def coverage(starts: list[int], window: int, weights: torch.Tensor, length: int) -> torch.Tensor:
    """The sum over windows at ``starts`` of their ``weights`` along one axis: ``(length,)``."""
    total = torch.zeros(length, dtype=weights.dtype)
    for start in starts:
        total[start:start + window] += weights
    return total


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


# read_region(top, bottom, left, right): input rows [top, bottom) and columns [left, right) of the
# images (N, C_in, rows, columns), in a frame whose column 0 is the image's column -context; rows
# and columns outside the image are mirrored.
RegionReader = Callable[[int, int, int, int], torch.Tensor]
# Finished logits are handed out in pieces at most this wide, so that no full-width temporary
# (a division, an argmax's int64) is ever made: memory does not grow with a slide's width.
COLUMN_PIECE = 2048


def banded_logits(
    net: Net, read_region: RegionReader, grid: WindowGrid, blending: Blending = "constant", batch_size: int = 1,
    on_window: Callable[[], None] | None = None, piece: int = COLUMN_PIECE,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The one sliding-window engine: blended logits of the image, a band of rows at a time.

    Visits the grid row of windows by row of windows (``batch_size`` windows per net call, each
    batch reading only the input columns it covers) and yields ``(first row, first column,
    logits (N, C, rows, columns))`` pieces at most ``piece`` columns wide, left to right, as soon
    as no later window reaches those rows. Only ``window_h`` rows of logits are ever held, in a
    ring buffer (no copy when the band moves down); the windows' summed weights are separable,
    a row factor times a column factor, so they take no per-pixel memory. With autograd on
    (training through windows) the band is rebuilt out of place instead. A net may return
    windows of its input's size (the context is then cropped off) or ``2 * context`` smaller.
    """
    band: torch.Tensor | None = None
    c, ring = grid.context, not torch.is_grad_enabled()
    height, width, window_h, window_w = grid.height, grid.width, grid.window_h, grid.window_w
    extent_h, extent_w = grid.extent
    row_weights, col_weights = axis_weights(window_h, blending), axis_weights(window_w, blending)
    weights = row_weights[:, None] * col_weights[None, :]
    row_total = coverage(grid.ys, window_h, row_weights, extent_h)
    col_total = coverage(grid.xs, window_w, col_weights, extent_w)
    band_top = 0
    for row, y in enumerate(grid.ys):
        start = y % window_h if ring else 0  # where image row y sits in the band
        for first in range(0, len(grid.xs), batch_size):
            batch_xs = grid.xs[first:first + batch_size]
            left = batch_xs[0]
            region = read_region(y - c, y + window_h + c, left, batch_xs[-1] + window_w + 2 * c)
            count = region.shape[0]
            logits = net(torch.cat([region[..., x - left:x - left + window_w + 2 * c] for x in batch_xs]))
            del region
            if c and logits.shape[-2:] == (window_h + 2 * c, window_w + 2 * c):  # a same-size net
                logits = logits[..., c:c + window_h, c:c + window_w]
            if logits.shape[-2:] != (window_h, window_w):
                raise ValueError(
                    f"the net turned a {window_h + 2 * c}x{window_w + 2 * c} window into "
                    f"{tuple(logits.shape[-2:])} logits, expected {window_h}x{window_w} (context={c})"
                )
            if band is None:
                weights = weights.to(logits.device, logits.dtype)
                row_total, col_total = row_total.to(logits.device, logits.dtype), col_total.to(logits.device, logits.dtype)
                band = logits.new_zeros(count, logits.shape[1], window_h, extent_w)
            for i, x in enumerate(batch_xs):
                weighted = logits[i * count:(i + 1) * count] * weights
                band[..., start:, x:x + window_w] += weighted[..., :window_h - start, :]
                if start:
                    band[..., :start, x:x + window_w] += weighted[..., window_h - start:, :]
                if on_window is not None:
                    on_window()
        assert band is not None
        # Rows above the next row of windows are final: hand them out, then free their ring rows.
        done = min(grid.ys[row + 1] if row + 1 < len(grid.ys) else height, height)
        rows = done - band_top
        parts = [(start, min(start + rows, window_h))] + ([(0, start + rows - window_h)] if start + rows > window_h else [])
        divisor = row_total[band_top:done, None]
        for left in range(0, width, piece):
            right = min(left + piece, width)
            chunk = torch.cat([band[..., a:b, left:right] for a, b in parts], dim=-2) if len(parts) > 1 else \
                band[..., parts[0][0]:parts[0][1], left:right]
            yield band_top, left, chunk / (divisor * col_total[None, left:right])
        if ring:
            for a, b in parts:
                band[..., a:b, :] = 0
        else:  # autograd: a new band, the finished rows dropped
            band = torch.cat([band[..., rows:, :], band.new_zeros(*band.shape[:2], rows, extent_w)], dim=2)
        band_top = done


def whole_rows(pieces: Iterator[tuple[int, int, torch.Tensor]]) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`banded_logits`' pieces joined into whole bands ``(first row, logits (N, C, rows, W))``
    (for images that fit in memory)."""
    current: list[torch.Tensor] = []
    current_top = None
    for top, _, logits in pieces:
        if current and top != current_top:
            yield current_top, torch.cat(current, dim=-1)  # type: ignore[misc]
            current = []
        current_top = top
        current.append(logits)
    if current:
        yield current_top, torch.cat(current, dim=-1)  # type: ignore[misc]


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

    def read_region(top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        return padded[..., top + context:bottom + context, left:right]

    return torch.cat([logits for _, logits in whole_rows(banded_logits(net, read_region, grid, blending))], dim=2)


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
