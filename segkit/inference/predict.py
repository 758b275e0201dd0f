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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
from PIL import Image

from segkit.data.files.intensity import IntensityScaling
from segkit.errors import SegkitError
from segkit.geometry import mirror_pad, smallest_valid_output
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


def as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or an array as ``(H, W, C)``."""
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


@torch.inference_mode()
def predict_image(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: Image.Image | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    config: InferenceConfig = InferenceConfig(),
    net: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
    on_probabilities: ProbabilityWriter | None = None,
    on_window: Callable[[], None] | None = None,
    intensity: IntensityScaling | None = None,
) -> np.ndarray:
    """The class-index mask ``(H, W)`` uint8 of ``image`` (a PIL image of the model's mode, or
    an ``(H, W[, C])`` array of any dtype), scaled by ``intensity`` (bounds from the whole image)
    then normalised with ``mean``/``std``, as in training.

    ``model`` maps normalised windows to logits of the same size (``net`` with a ``context``,
    e.g. :class:`segkit.nets.PaperUNet`, maps windows padded by that context); ``net`` tells
    the geometry (defaults to ``model``). ``on_probabilities(first_row, probs)`` receives the
    softmax of every finished band; ``on_window()`` is called after every window (progress).
    ``config.tta``/``config.scales`` average the logits of every window batch (the whole image
    in ``whole`` mode) over flipped/rotated/rescaled views; rescaled views need a model whose
    logits have its input's size (a valid-convolution net's module, not the net).

    Example:
        >>> net = torch.nn.Conv2d(3, 4, 3, padding=1)
        >>> image = Image.new("RGB", (70, 45))
        >>> mask = predict_image(net, image, [0.5] * 3, [0.25] * 3, InferenceConfig(window=32))
        >>> mask.shape, mask.dtype
        ((45, 70), dtype('uint8'))
    """
    device = torch.device(device)
    pixels = as_array(image)
    height, width = pixels.shape[:2]
    preprocess = Preprocess(*(intensity or IntensityScaling()).bounds(pixels), mean, std)
    tta = config.test_time_augmentation
    if tta.scales != (1.0,) and getattr(model, "context", None) is not None:
        raise SegkitError(
            f"inference.scales={list(tta.scales)}: a valid-convolution net's logits are smaller than its "
            "input, so it cannot be rescaled; pass its module as the model, or scales=[1.0]"
        )
    forward = model if tta.is_identity else partial(tta, model)
    if config.mode == "whole":
        logits = forward(preprocess(pixels, device))[0]
        if on_probabilities is not None:
            on_probabilities(0, logits.softmax(0).cpu().numpy())
        if on_window is not None:
            on_window()
        return logits.argmax(0).to(torch.uint8).cpu().numpy()

    window, context, multiple, overlap, blending = _window_geometry(net or model, config)  # type: ignore[arg-type]
    # Same-size nets take windows no larger than the image; valid nets keep their valid size.
    window_hw = (window, window) if context and multiple > 1 else (min(window, height), min(window, width))
    grid = WindowGrid.plan(height, width, window_hw, overlap, context, multiple)
    right = grid.extent[1] - width + context

    def read_rows(top: int, bottom: int) -> torch.Tensor:
        return _input_rows(pixels, top, bottom, context, right, preprocess, device)

    mask = np.empty((height, width), dtype=np.uint8)
    for top, logits in banded_logits(forward, read_rows, grid, blending, config.batch_size, on_window):
        mask[top:top + logits.shape[-2]] = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
        if on_probabilities is not None:
            on_probabilities(top, logits[0].float().softmax(0).cpu().numpy())
    return mask


def _input_rows(pixels: np.ndarray, top: int, bottom: int, left: int, right: int,
                preprocess: Preprocess, device: torch.device) -> torch.Tensor:
    """Normalised rows ``[top, bottom)`` of ``pixels`` with ``left``/``right`` extra columns,
    mirrored wherever they fall outside the image: ``(1, C, bottom - top, W + left + right)``."""
    height = pixels.shape[0]
    rows = pixels[max(top, 0):min(bottom, height)]
    return mirror_pad(preprocess(rows, device), left, right, max(0, -top), max(0, bottom - height))
