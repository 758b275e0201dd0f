"""Intensity scaling: any image dtype to float32 on about [0, 1], before ``mean``/``std``.

8-bit images are divided by 255, as every 8-bit pipeline does. 16-bit and float images
(fluorescence, EM, CT) rarely use their whole range and differ from image to image, so by
default each image is scaled by its own percentiles per channel (1 / 99.8, as CSBDeep and
StarDist normalise microscopy), or by a fixed range a user knows (e.g. a 12-bit camera's
``[0, 4095]``). Training stores the setting in the checkpoint, and ``segkit-predict`` and
``segkit-export``'s metadata apply exactly the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from segkit.errors import SegkitError

MODES = ("auto", "percentile", "range")
# Percentiles of a large image are estimated on a regular subsample of at most this many
# pixels per channel (a 8192 x 8192 slide: every 4th row and column); exact for smaller ones.
MAX_PERCENTILE_SAMPLES = 4_000_000


@dataclass(frozen=True)
class IntensityScaling:
    """How pixel values become float32 on about [0, 1] (``data.intensity`` and its options).

    Args:
        mode: ``auto`` (8-bit: / 255; other dtypes: ``percentile``), ``percentile`` (each
            image and channel from its ``percentiles`` to [0, 1]) or ``range`` (``value_range``
            to [0, 1], the same for every image).
        percentiles: ``(low, high)`` for ``percentile``.
        value_range: ``(low, high)`` for ``range``.

    Example:
        >>> scale = IntensityScaling("range", value_range=(0, 4095))
        >>> scale(np.array([[[0], [4095]]], np.uint16)).ravel().tolist()
        [0.0, 1.0]
    """

    mode: str = "auto"
    percentiles: tuple[float, float] = (1.0, 99.8)
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SegkitError(f"data.intensity={self.mode!r}: use one of {', '.join(MODES)}")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise SegkitError(f"data.percentiles={list(self.percentiles)}: use [low, high] with 0 <= low < high <= 100")
        if self.mode == "range" and (
            self.value_range is None or len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]
        ):
            raise SegkitError(
                    f"data.intensity=range needs data.value_range=[low, high] with low < high, got {self.value_range}"
                )

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> IntensityScaling:
        """From a dict such as :meth:`to_dict` gives (``None``: the default)."""
        config = dict(config or {})
        for key in ("percentiles", "value_range"):
            if config.get(key) is not None:
                config[key] = tuple(float(v) for v in config[key])
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints and export metadata."""
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    def bounds(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(low, high)`` that map ``array`` ``(H, W, C)`` to [0, 1]."""
        channels = array.shape[-1]
        if self.mode == "range":
            assert self.value_range is not None
            low, high = self.value_range
        elif self.mode == "auto" and array.dtype == np.uint8:
            low, high = 0.0, 255.0
        else:
            flat = array.reshape(-1, channels)
            step = max(1, int(np.ceil(flat.shape[0] / MAX_PERCENTILE_SAMPLES)))
            low, high = np.percentile(flat[::step], self.percentiles, axis=0)
        low_c = np.broadcast_to(np.asarray(low, np.float32), (channels,)).copy()
        high_c = np.broadcast_to(np.asarray(high, np.float32), (channels,)).copy()
        return low_c, np.maximum(high_c, low_c + 1e-6)

    @staticmethod
    def apply(array: np.ndarray, low: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(array - low) / (high - low)`` as float32 (values outside are kept, not clipped)."""
        low_a, high_a = np.asarray(low, np.float32), np.asarray(high, np.float32)
        return (array.astype(np.float32) - low_a) / (high_a - low_a)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """``array`` ``(H, W, C)`` scaled with its own :meth:`bounds`."""
        return self.apply(array, *self.bounds(array))
