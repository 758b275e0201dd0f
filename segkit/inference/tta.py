"""Test-time augmentation (TTA): average a net's logits over flipped, rotated and rescaled views.

Every view is an image transform ``T`` (a dihedral transform, optionally after a bilinear
rescale); the net's logits of ``T(images)`` are brought back to the images' frame by the exact
inverse of ``T`` and the logits of all views are averaged. Modes:

- ``none``: the image as it is (1 view per scale);
- ``flip``: the identity, a horizontal and a vertical flip (3 views per scale);
- ``d4``: the 8 dihedral transforms, rotations by 0/90/180/270 degrees each with and without
  a horizontal flip (8 views per scale, so 8x the time of one pass).

Quarter turns of a non-square ``H x W`` image give ``W x H`` inputs, which any fully
convolutional net takes; the inverse turns its logits back to ``H x W``.

The transforms are written here with ``torch.flip``/``torch.rot90`` rather than taken from a
library: the TTA packages around (ttach and the like) wrap models in their own classes, handle
square images or flips only, or undo rotations approximately; these few lines invert every
transform exactly (the tests check ``inverse(forward(x)) == x`` bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

from segkit.errors import SegkitError

__all__ = ["TTA_MODES", "Dihedral", "TestTimeAugmentation", "tta_from_config"]

TTA_MODES = ("none", "flip", "d4")
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
_SPATIAL = (-2, -1)


@dataclass(frozen=True)
class Dihedral:
    """One transform of the square's symmetry group on the last two (H, W) dimensions:
    ``quarter_turns`` rotations by 90 degrees (``torch.rot90``'s direction), then a flip of
    ``flip_dims`` (``(-1,)``: horizontal, ``(-2,)``: vertical, ``()``: none)."""

    quarter_turns: int = 0
    flip_dims: tuple[int, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., H, W)`` transformed: rotated, then flipped."""
        if self.quarter_turns % 4:
            x = torch.rot90(x, self.quarter_turns % 4, dims=_SPATIAL)
        if self.flip_dims:
            x = torch.flip(x, self.flip_dims)
        return x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """The exact inverse of :meth:`forward`: the flip undone, then the rotation."""
        if self.flip_dims:
            x = torch.flip(x, self.flip_dims)
        if self.quarter_turns % 4:
            x = torch.rot90(x, -(self.quarter_turns % 4), dims=_SPATIAL)
        return x

    @property
    def name(self) -> str:
        """E.g. ``rot90+hflip``; ``identity`` for the identity."""
        flips = {(): "", (-1,): "hflip", (-2,): "vflip"}.get(self.flip_dims, f"flip{self.flip_dims}")
        parts = [f"rot{90 * (self.quarter_turns % 4)}" if self.quarter_turns % 4 else "", flips]
        return "+".join(p for p in parts if p) or "identity"


IDENTITY = Dihedral()
TRANSFORMS: dict[str, tuple[Dihedral, ...]] = {
    "none": (IDENTITY,),
    "flip": (IDENTITY, Dihedral(0, (-1,)), Dihedral(0, (-2,))),
    "d4": tuple(Dihedral(turns, flip) for turns in range(4) for flip in ((), (-1,))),
}


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` to ``size`` (``align_corners=False``), in float32
    at least (bilinear upsampling of half precision is not available on every device)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return F.interpolate(x.to(dtype), size=size, mode="bilinear", align_corners=False)


class TestTimeAugmentation:
    """Averages ``logits_fn``'s logits over the views of ``mode`` at every scale of ``scales``.

    Args:
        mode: ``none``, ``flip`` (3 views) or ``d4`` (8 views); see :data:`TTA_MODES`.
        scales: image scale factors; each view's image is resized bilinearly to
            ``round(H * s) x round(W * s)`` and its logits back to ``H x W``. A scale of 1.0
            resizes nothing, so a valid-convolution net (logits smaller than its input) takes
            every mode at scale 1 only.

    Calling it with ``(logits_fn, images (N, C, H, W))`` runs ``logits_fn`` once per view
    (``len(scales) * views`` calls; exactly one call on the untouched images when
    :attr:`is_identity`) and returns the mean logits in ``logits_fn``'s dtype.

    Example:
        >>> net = torch.nn.Conv2d(3, 2, kernel_size=1)  # per pixel: commutes with flips and turns
        >>> images = torch.randn(2, 3, 5, 7)
        >>> tta = TestTimeAugmentation("d4")
        >>> with torch.no_grad():
        ...     logits = tta(net, images)
        ...     same = torch.allclose(logits, net(images), atol=1e-6)
        >>> logits.shape, same, tta.num_views, tta.is_identity
        (torch.Size([2, 2, 5, 7]), True, 8, False)
        >>> TestTimeAugmentation("flip", scales=[0.75, 1.0, 1.25]).num_views
        9
        >>> TestTimeAugmentation("rotate")
        Traceback (most recent call last):
        ...
        ValueError: unknown test-time augmentation mode 'rotate': choose one of none, flip, d4
    """

    __test__ = False  # a class named Test* that pytest must not collect

    def __init__(self, mode: str = "none", scales: Sequence[float] = (1.0,)) -> None:
        if not isinstance(mode, str) or mode not in TTA_MODES:
            raise ValueError(f"unknown test-time augmentation mode {mode!r}: choose one of {', '.join(TTA_MODES)}")
        values = list(scales) if isinstance(scales, Iterable) and not isinstance(scales, (str, bytes)) else None
        if not values:
            raise ValueError(f"scales={scales!r} is empty or not a list: pass positive scale factors, e.g. (0.75, 1.0, 1.25)")
        for scale in values:
            if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale) or scale <= 0:
                raise ValueError(f"scale {scale!r} in scales={values!r} is not a positive number: "
                                 "pass positive scale factors, e.g. (0.75, 1.0, 1.25)")
        self.mode = mode
        self.scales: tuple[float, ...] = tuple(float(scale) for scale in values)
        self.transforms: tuple[Dihedral, ...] = TRANSFORMS[mode]

    @property
    def is_identity(self) -> bool:
        """Whether this is one plain pass: mode ``none`` at scale 1 only."""
        return self.mode == "none" and self.scales == (1.0,)

    @property
    def num_views(self) -> int:
        """How many times ``logits_fn`` runs per call."""
        return len(self.transforms) * len(self.scales)

    def __repr__(self) -> str:
        return f"TestTimeAugmentation(mode={self.mode!r}, scales={self.scales!r})"

    def __call__(self, logits_fn: LogitsFn, images: torch.Tensor) -> torch.Tensor:
        """Mean logits ``(N, K, H, W)`` of ``images`` ``(N, C, H, W)`` over all views."""
        if self.is_identity:
            return logits_fn(images)
        height, width = images.shape[-2:]
        total: torch.Tensor | None = None
        dtype = images.dtype
        for scale in self.scales:
            scaled = images
            if scale != 1.0:
                scaled = _resize(images, (max(1, round(height * scale)), max(1, round(width * scale)))).to(images.dtype)
            for transform in self.transforms:
                logits = transform.inverse(logits_fn(transform.forward(scaled)))
                dtype = logits.dtype
                if scale != 1.0:
                    logits = _resize(logits, (height, width))
                # Summed in float32 at least: 8+ bfloat16 views would lose precision.
                logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
                total = logits if total is None else total + logits
        assert total is not None
        return (total / self.num_views).to(dtype)


def tta_from_config(mode: str, scales: Sequence[float]) -> TestTimeAugmentation:
    """The TTA of a command's ``inference.tta`` and ``inference.scales``; a bad value is a
    :class:`~segkit.errors.SegkitError` naming the key (a one-line error in the commands)."""
    if not isinstance(mode, str) or mode not in TTA_MODES:
        raise SegkitError(f"inference.tta={mode!r}: use none (1 pass), flip (3 passes) or d4 (8 passes)")
    try:
        return TestTimeAugmentation(mode, scales)
    except ValueError:
        shown = list(scales) if isinstance(scales, Iterable) and not isinstance(scales, str) else scales
        raise SegkitError(f"inference.scales={shown!r}: use a list of positive numbers, e.g. [0.75,1.0,1.25]") from None
