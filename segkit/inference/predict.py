"""Predict one image of any size, in horizontal bands, so memory stays bounded.

``whole`` runs the model once on the whole image (logits ``C x H x W`` in memory at once).
``slide`` and ``tile`` run the sliding-window engine (:func:`segkit.inference.tiling.banded_logits`),
which keeps logits for one band of rows only: each finished band's argmax goes into the
``uint8`` mask (and its probabilities, if asked, to a callback that can write them to disk). Peak memory is then about the image,
the mask and ``C x window x W`` floats, not ``C x H x W``.

- ``slide``: windows of ``window`` pixels overlapping by ``overlap``, logits averaged with
  ``constant`` or ``gaussian`` weights (:func:`segkit.inference.blend_weights`).
- ``tile``: non-overlapping output tiles of ``window`` pixels, each computed from the tile
  plus ``context`` pixels around it (mirrored at the image border) whose outputs are dropped;
  a valid-convolution net (the paper U-Net) brings its own context and tile grid (overlap-tile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
from PIL import Image

from segkit.data.files.intensity import IntensityScaling
from segkit.data.files.lazy import LazyImage
from segkit.errors import SegkitError
from segkit.geometry import smallest_valid_output
from segkit.inference.ensemble import Ensemble, Normalization
from segkit.inference.tiling import Blending, WindowGrid, banded_logits
from segkit.inference.tta import TestTimeAugmentation, tta_from_config

Mode = Literal["whole", "slide", "tile"]
ProbabilityWriter = Callable[[int, np.ndarray], None]  # (first row, probabilities (C, rows, W))


@dataclass(frozen=True)
class InferenceConfig:
    """How ``predict_image`` visits an image (``conf/predict.yaml``'s ``inference`` node)."""

    mode: Mode = "slide"
    window: int = 512
    overlap: float = 0.25
    blending: Blending = "gaussian"
    context: int = 32
    batch_size: int = 4
    # Test-time augmentation of every window batch (segkit.inference.tta): none, flip or d4,
    # at each of ``scales``.
    tta: str = "none"
    scales: Sequence[float] = (1.0,)

    def __post_init__(self) -> None:
        problems = {
            "mode": (self.mode in ("whole", "slide", "tile"), "whole, slide or tile"),
            "blending": (self.blending in ("constant", "gaussian"), "constant or gaussian"),
            "window": (self.window >= 1, "a side in px >= 1"),
            "overlap": (0.0 <= self.overlap < 1.0, "a fraction in [0, 1)"),
            "context": (self.context >= 0, "px >= 0"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
        }
        for key, (valid, expected) in problems.items():
            if not valid:
                raise SegkitError(f"inference.{key}={getattr(self, key)!r}: use {expected}")
        object.__setattr__(self, "scales", self.test_time_augmentation.scales)  # a plain tuple

    @property
    def test_time_augmentation(self) -> TestTimeAugmentation:
        """The :class:`TestTimeAugmentation` of ``tta`` and ``scales`` (a SegkitError if bad)."""
        return tta_from_config(self.tta, self.scales)


def _window_geometry(net: torch.nn.Module, config: InferenceConfig) -> tuple[int, int, int, float, Blending]:
    """``(window, context, multiple, overlap, blending)`` for the net and mode."""
    if config.mode == "slide":
        return config.window, 0, 1, config.overlap, config.blending
    context = getattr(net, "context", None)
    if context is not None:  # a valid-convolution net: its context, its pooling grid
        depth = net.depth  # type: ignore[attr-defined]
        return smallest_valid_output(config.window, context, depth), context, 2**depth, 0.0, "constant"
    return config.window, config.context, 1, 0.0, "constant"


@dataclass(frozen=True)
class Preprocess:
    """Raw pixels -> the net's input: intensity bounds (per channel), then ``mean``/``std``."""

    low: Sequence[float]
    high: Sequence[float]
    mean: Sequence[float]
    std: Sequence[float]

    def __call__(self, pixels: np.ndarray, device: torch.device) -> torch.Tensor:
        """``(h, w, C)`` of any dtype -> normalised ``(1, C, h, w)`` float32."""
        tensor = torch.from_numpy(np.array(pixels, dtype=np.float32)).to(device)
        tensor = tensor.permute(2, 0, 1)

        def column(values: Sequence[float]) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values, np.float32), device=device)[:, None, None]

        scaled = (tensor - column(self.low)) / (column(self.high) - column(self.low))
        return ((scaled - column(self.mean)) / column(self.std))[None]


Band = tuple[int, np.ndarray, "np.ndarray | None"]  # (first row, class indices (rows, W), probabilities (C, rows, W))


class StackedPreprocess:
    """Raw pixels -> the inputs of an :class:`Ensemble`'s slots, stacked along the channels."""

    def __init__(self, steps: Sequence[Preprocess]) -> None:
        self.steps = list(steps)

    def __call__(self, pixels: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.cat([step(pixels, device) for step in self.steps], dim=1)


def input_preprocess(model: object, pixels: np.ndarray | LazyImage, mean: Sequence[float], std: Sequence[float],
                     intensity: IntensityScaling | None) -> Preprocess | StackedPreprocess:
    """What turns ``pixels``' windows into ``model``'s input: ``intensity`` (bounds from the whole
    image) then ``mean``/``std``; an :class:`Ensemble` that knows its members' normalisations
    gets each of them instead, stacked."""
    given = Normalization.of(mean, std, intensity)
    normalizations = [n or given for n in (model.normalizations if isinstance(model, Ensemble) else (None,))]
    steps = [Preprocess(*intensity_bounds(pixels, n.intensity), n.mean, n.std) for n in normalizations]
    return steps[0] if len(steps) == 1 else StackedPreprocess(steps)


def as_array(image: Image.Image | np.ndarray | LazyImage) -> np.ndarray | LazyImage:
    """A PIL image or an array as ``(H, W, C)``; a :class:`LazyImage` stays lazy."""
    if isinstance(image, LazyImage):
        return image
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def intensity_bounds(pixels: np.ndarray | LazyImage, intensity: IntensityScaling) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel bounds of the whole image; a lazy image's from a sample of its rows."""
    return pixels.intensity_bounds(intensity) if isinstance(pixels, LazyImage) else intensity.bounds(pixels)


@torch.inference_mode()
def predict_bands(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: Image.Image | np.ndarray | LazyImage,
    mean: Sequence[float],
    std: Sequence[float],
    config: InferenceConfig = InferenceConfig(),
    net: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
    probabilities: bool = False,
    on_window: Callable[[], None] | None = None,
    intensity: IntensityScaling | None = None,
) -> Iterator[Band]:
    """The prediction of ``image`` as bands of rows, top to bottom: ``(first row, class indices
    (rows, W) uint8, softmax (C, rows, W) float32 or None)``; see :func:`predict_image`.

    Only one band of windows is held at a time, and a :class:`LazyImage` is read band by band,
    so neither the input nor the output of a slide larger than memory is ever whole here.
    An :class:`~segkit.inference.ensemble.Ensemble` with its members' normalisations gets each
    member's input made from the raw pixels (``mean``, ``std`` and ``intensity`` then unused),
    and the TTA views of each member.

    Example:
        >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
        >>> bands = list(predict_bands(net, np.zeros((70, 20), np.uint16), [0.5], [0.25], InferenceConfig(window=32)))
        >>> [(top, rows.shape) for top, rows, _ in bands]
        [(0, (24, 20)), (24, (24, 20)), (48, (22, 20))]
    """
    device = torch.device(device)
    pixels = as_array(image)
    height, width = pixels.shape[:2]
    preprocess = input_preprocess(model, pixels, mean, std, intensity)
    tta = config.test_time_augmentation
    if tta.scales != (1.0,) and getattr(model, "context", None) is not None:
        raise SegkitError(
            f"inference.scales={list(tta.scales)}: a valid-convolution net's logits are smaller than its "
            "input, so it cannot be rescaled; pass its module as the model, or scales=[1.0]"
        )
    if tta.is_identity:
        forward = model
    elif isinstance(model, Ensemble):  # each member's views averaged, then the mean of probabilities
        forward = partial(model, tta=tta)
    else:
        forward = partial(tta, model)
    if config.mode == "whole":
        logits = forward(preprocess(pixels[0:height], device))[0]
        if on_window is not None:
            on_window()
        yield 0, logits.argmax(0).to(torch.uint8).cpu().numpy(), logits.softmax(0).cpu().numpy() if probabilities else None
        return

    window, context, multiple, overlap, blending = _window_geometry(net or model, config)  # type: ignore[arg-type]
    # Same-size nets take windows no larger than the image; valid nets keep their valid size.
    window_hw = (window, window) if context and multiple > 1 else (min(window, height), min(window, width))
    grid = WindowGrid.plan(height, width, window_hw, overlap, context, multiple)

    def read_region(top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        return preprocess(mirrored_region(pixels, top, bottom, left - context, right - context), device)

    classes = np.empty((0, width), np.uint8)
    probs: np.ndarray | None = None
    for top, left, logits in banded_logits(forward, read_region, grid, blending, config.batch_size, on_window):
        if left == 0:
            if classes.shape[0]:
                yield band_top, classes, probs
            band_top, rows = top, logits.shape[-2]
            classes = np.empty((rows, width), np.uint8)
            probs = np.empty((logits.shape[1], rows, width), np.float32) if probabilities else None
        columns = slice(left, left + logits.shape[-1])
        classes[:, columns] = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
        if probs is not None:
            probs[:, :, columns] = logits[0].float().softmax(0).cpu().numpy()
    if classes.shape[0]:
        yield band_top, classes, probs


def predict_image(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: Image.Image | np.ndarray | LazyImage,
    mean: Sequence[float],
    std: Sequence[float],
    config: InferenceConfig = InferenceConfig(),
    net: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
    on_probabilities: ProbabilityWriter | None = None,
    on_window: Callable[[], None] | None = None,
    intensity: IntensityScaling | None = None,
) -> np.ndarray:
    """The class-index mask ``(H, W)`` uint8 of ``image`` (a PIL image of the model's mode, an
    ``(H, W[, C])`` array of any dtype, or a :class:`LazyImage`), scaled by ``intensity`` (bounds
    from the whole image) then normalised with ``mean``/``std``, as in training.

    ``model`` maps normalised windows to logits of the same size (``net`` with a ``context``,
    e.g. :class:`segkit.nets.PaperUNet`, maps windows padded by that context); ``net`` tells
    the geometry (defaults to ``model``). ``on_probabilities(first_row, probs)`` receives the
    softmax of every finished band; ``on_window()`` is called after every window (progress).
    ``config.tta``/``config.scales`` average the logits of every window batch (the whole image
    in ``whole`` mode) over flipped/rotated/rescaled views; rescaled views need a model whose
    logits have its input's size (a valid-convolution net's module, not the net).
    :func:`predict_bands` gives the same bands without holding the whole mask.

    Example:
        >>> net = torch.nn.Conv2d(3, 4, 3, padding=1)
        >>> image = Image.new("RGB", (70, 45))
        >>> mask = predict_image(net, image, [0.5] * 3, [0.25] * 3, InferenceConfig(window=32))
        >>> mask.shape, mask.dtype
        ((45, 70), dtype('uint8'))
    """
    pixels = as_array(image)
    mask = np.empty(pixels.shape[:2], dtype=np.uint8)
    for top, classes, probs in predict_bands(model, pixels, mean, std, config, net, device,
                                             on_probabilities is not None, on_window, intensity):
        mask[top:top + classes.shape[0]] = classes
        if on_probabilities is not None and probs is not None:
            on_probabilities(top, probs)
    return mask


def reflected(indices: np.ndarray, size: int) -> np.ndarray:
    """``indices`` (any integers) mirrored into ``[0, size)`` as repeated reflection padding
    mirrors them (period ``2 * (size - 1)``, the edge pixel not repeated).

    Example:
        >>> reflected(np.arange(-4, 7), 3).tolist()
        [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2]
    """
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.mod(indices, period)
    return np.where(folded < size, folded, period - folded)


def mirrored_region(pixels: np.ndarray | LazyImage, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Rows ``[top, bottom)`` and columns ``[left, right)`` of ``pixels`` ``(H, W, C)``, mirrored
    wherever they fall outside the image; reads only the part of the image they touch."""
    height, width = pixels.shape[:2]
    rows, cols = reflected(np.arange(top, bottom), height), reflected(np.arange(left, right), width)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    block = pixels[r0:r1, c0:c1]
    inside = 0 <= top and bottom <= height and 0 <= left and right <= width
    return block if inside else block[(rows - r0)[:, None], (cols - c0)[None, :]]
