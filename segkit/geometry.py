"""Image geometry that nets, data and inference share: mirrored padding, window grids and
the input sizes a valid-convolution U-Net takes. Plain functions of sizes and tensors; this
module imports nothing from segkit, so every other package may import it.

Example:
    >>> window_starts(100, 40, window_stride(40, 0.25)), valid_output_size(572)
    ([0, 30, 60], 388)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mirror_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Reflect-pad ``(N, C, H, W)``, repeating the reflection when a pad exceeds the image.

    Example:
        >>> mirror_pad(torch.arange(3.0).view(1, 1, 1, 3), 4, 0, 0, 0)[0, 0, 0].tolist()
        [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0]
    """
    while left or right or top or bottom:
        height, width = x.shape[-2:]
        step = [min(left, width - 1), min(right, width - 1), min(top, height - 1), min(bottom, height - 1)]
        if (width == 1 and (left or right)) or (height == 1 and (top or bottom)):
            return F.pad(x, (left, right, top, bottom), mode="replicate")  # nothing to reflect
        x = F.pad(x, tuple(step), mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return x


def window_padding(window: int) -> tuple[int, int]:
    """(before, after) pixels of context for a window centred on a pixel (centre = w // 2)."""
    return window // 2, window - 1 - window // 2


def window_batch(padded: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, window: int) -> torch.Tensor:
    """The ``window x window`` crops of ``padded`` ``(C, H, W)`` whose top-left corners are
    ``(rows[i], cols[i])``: a ``(n, C, window, window)`` batch (one gather, no Python loop)."""
    offsets = torch.arange(window, device=padded.device)
    row_index = (rows[:, None] + offsets)[:, :, None]  # (n, w, 1)
    col_index = (cols[:, None] + offsets)[:, None, :]  # (n, 1, w)
    return padded[:, row_index, col_index].permute(1, 0, 2, 3)


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


def valid_output_size(size: int, depth: int = 4) -> int | None:
    """Output side for an input side ``size``, or ``None`` if the valid convs cannot take it
    (a map of odd side before a 2x2 pooling, or nothing left).

    Example:
        >>> valid_output_size(572), valid_output_size(500)
        (388, None)
    """
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    for _ in range(depth):
        size = 2 * size - 4
        if size <= 0:
            return None
    return size


def nearest_valid_sizes(size: int, depth: int = 4) -> tuple[int | None, int]:
    """The largest valid input side below ``size`` (``None`` if there is none) and the smallest above."""
    below = next((s for s in range(size - 1, 0, -1) if valid_output_size(s, depth)), None)
    above = next(s for s in range(size + 1, size + 2 ** (depth + 2) + 400) if valid_output_size(s, depth))
    return below, above


def smallest_valid_output(size: int, context: int, depth: int) -> int:
    """The smallest output side >= ``size`` whose input (``+ 2 * context``) a valid net of
    ``depth`` poolings takes."""
    out = size
    while valid_output_size(out + 2 * context, depth) is None:
        out += 1
    return out


def round_up_to_grid(size: int, smallest: int, multiple: int) -> int:
    """The first of ``smallest, smallest + multiple, ...`` not below ``size`` (for ``size >=
    smallest - multiple + 1``): a valid net's output sizes. Plain arithmetic, so that a trace
    with tensor sizes (ONNX / TorchScript export) keeps it size-dependent.

    Example:
        >>> round_up_to_grid(40, 36, 16), round_up_to_grid(36, 36, 16)
        (52, 36)
    """
    return smallest + (size - smallest + multiple - 1) // multiple * multiple
