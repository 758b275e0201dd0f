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

from collections.abc import Callable
from typing import Literal

import torch

from segkit.nets.densify import mirror_pad
from segkit.nets.unet_paper import valid_output_size

Blending = Literal["constant", "gaussian"]
Net = Callable[[torch.Tensor], torch.Tensor]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts ``0, stride, 2*stride, ...`` until a window reaches ``length`` (the last may overhang).

    Example:
        >>> window_starts(10, 4, 3)
        [0, 3, 6]
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    starts = [0]
    while starts[-1] + window < length:
        starts.append(starts[-1] + stride)
    return starts


def window_stride(window: int, overlap: float, multiple: int = 1) -> int:
    """``window * (1 - overlap)`` rounded down to a multiple of ``multiple`` (at least one).

    Example:
        >>> window_stride(100, 0.25), window_stride(388, 0.0, multiple=16)
        (75, 384)
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = int(window * (1.0 - overlap)) // multiple * multiple
    return max(stride, multiple)


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


def sliding_window_logits(
    net: Net,
    images: torch.Tensor,
    window: int | tuple[int, int],
    overlap: float = 0.25,
    blending: Blending = "constant",
    context: int = 0,
    multiple: int = 1,
) -> torch.Tensor:
    """Logits ``(N, C, H, W)`` of ``images`` ``(N, C_in, H, W)``, computed window by window.

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
    window_h, window_w = (window, window) if isinstance(window, int) else window
    ys = window_starts(height, window_h, window_stride(window_h, overlap, multiple))
    xs = window_starts(width, window_w, window_stride(window_w, overlap, multiple))
    extent_h, extent_w = ys[-1] + window_h, xs[-1] + window_w
    padded = mirror_pad(images, context, extent_w - width + context, context, extent_h - height + context)
    weights = blend_weights(window_h, window_w, blending).to(images.device)
    total = images.new_zeros(extent_h, extent_w)
    logits_sum: torch.Tensor | None = None
    for y in ys:
        for x in xs:
            logits = net(padded[..., y:y + window_h + 2 * context, x:x + window_w + 2 * context])
            if logits.shape[-2:] != (window_h, window_w):
                raise ValueError(
                    f"the net turned a {window_h + 2 * context}x{window_w + 2 * context} window into "
                    f"{tuple(logits.shape[-2:])} logits, expected {window_h}x{window_w} (context={context})"
                )
            if logits_sum is None:
                logits_sum = logits.new_zeros(*logits.shape[:2], extent_h, extent_w)
            logits_sum[..., y:y + window_h, x:x + window_w] += logits * weights.to(logits.dtype)
            total[y:y + window_h, x:x + window_w] += weights
    assert logits_sum is not None
    return (logits_sum / total.to(logits_sum.dtype))[..., :height, :width]


def smallest_valid_output(size: int, context: int, depth: int) -> int:
    """The smallest output side >= ``size`` whose input (``+ 2 * context``) a valid net of
    ``depth`` poolings takes."""
    out = size
    while valid_output_size(out + 2 * context, depth) is None:
        out += 1
    return out


def overlap_tile(net: torch.nn.Module, images: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """Logits of the same size as ``images`` from a valid-convolution U-Net
    (:class:`segkit.nets.PaperUNet`), with mirrored context at the borders.

    ``tile=None``: one pass over the whole mirror-padded image (padded up to a size the net
    takes). ``tile=T``: output tiles of ``T`` pixels (``T + 2 * context`` must be a valid input
    side, e.g. 388 for the paper's 572 tiles) placed every multiple of 16 pixels; the result
    equals the single pass up to floating-point rounding (the same sums in another order).

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
