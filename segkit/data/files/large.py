"""Image/mask pairs too large to decode whole (whole-slide and mosaic TIFFs), read by region.

A pair whose image has more than :data:`LARGE_PIXELS` pixels and is a TIFF is never decoded
whole. Validation and evaluation visit it as tiles, each read with a margin of context whose
mask is ignored, so each pixel is scored once. Each training sample reads one random crop of the image and the same crop of the mask,
window by window (:mod:`segkit.data.files.lazy`), decodes the mask crop as any mask, and scales
the image crop with bounds estimated once per image from a sample of its rows, so that a folder
of slides trains in the memory of a few crops. Preflight checks such pairs by their headers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segkit.data.files.intensity import IntensityScaling
from segkit.data.files.lazy import LazyImage, open_planes
from segkit.data.files.masks import MaskDecoder
from segkit.data.files.readers import TIFF_SUFFIXES, read_header
from segkit.errors import SegkitError, shown

# Above this many pixels (a 4096 x 4096 image: 32 MiB at 16 bits) a TIFF pair is read crop by crop.
LARGE_PIXELS = 4096 * 4096
# Validation and evaluation score a large image in tiles of this side, each predicted with this
# much context around it (the receptive field of the default U-Net is about 2 ** depth * 11 px).
EVAL_TILE, EVAL_MARGIN = 1024, 64


def is_large(image_path: Path) -> bool:
    """Whether ``image_path`` is a TIFF of more than :data:`LARGE_PIXELS` pixels (by its header)."""
    if Path(image_path).suffix.lower() not in TIFF_SUFFIXES:
        return False
    header = read_header(Path(image_path))
    return header.height * header.width > LARGE_PIXELS


def tile_cores(height: int, width: int, size: int | None = None) -> list[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of the non-overlapping ``size`` tiles covering an image
    (validation and evaluation of a large image: each pixel scored once); ``None``: :data:`EVAL_TILE`.

    Example:
        >>> tile_cores(1500, 1000)
        [(0, 1024, 0, 1000), (1024, 1500, 0, 1000)]
    """
    size = size or EVAL_TILE
    return [(top, min(top + size, height), left, min(left + size, width))
            for top in range(0, height, size) for left in range(0, width, size)]


class LargePair:
    """One large image/mask pair, opened lazily; :meth:`crop` reads a random ``size`` crop.

    Example:
        >>> import tempfile, tifffile
        >>> folder = Path(tempfile.mkdtemp())
        >>> tifffile.imwrite(folder / "i.tif", np.arange(200 * 300, dtype=np.uint16).reshape(200, 300), tile=(64, 64))
        >>> tifffile.imwrite(folder / "m.tif", np.ones((200, 300), np.uint8), tile=(64, 64))
        >>> pair = LargePair((folder / "i.tif", folder / "m.tif"), 1, MaskDecoder("binary", 2), IntensityScaling())
        >>> image, classes, _ = pair.crop(48)
        >>> image.shape, classes.shape, int(classes.max())
        ((1, 48, 48), (48, 48), 1)
    """

    def __init__(self, pair: tuple[Path, Path], in_channels: int, decoder: MaskDecoder,
                 intensity: IntensityScaling) -> None:
        self.pair, self.decoder = pair, decoder
        self.image: LazyImage = open_planes(pair[0], in_channels=in_channels)[0]
        self.image.channels = in_channels
        self.mask: LazyImage = open_planes(pair[1])[0]
        if self.image.shape[:2] != self.mask.shape[:2]:
            (ih, iw), (mh, mw) = self.image.shape[:2], self.mask.shape[:2]
            raise SegkitError(f"{shown(pair[0])} is {iw}x{ih} (width x height) but its mask {shown(pair[1])} is "
                              f"{mw}x{mh}; resize the mask to its image's size (nearest-neighbour) or fix the pair")
        self.low, self.high = self.image.intensity_bounds(intensity)

    def crop(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A random ``size`` x ``size`` crop (torch's generator: the sample's seed decides it) as
        ``(pixels (C, h, w) float32 scaled, classes (h, w), instance ids or None)``; smaller
        images give their whole extent (the transform pads)."""
        height, width = self.image.shape[:2]
        top = int(torch.randint(max(height - size, 0) + 1, ()))
        left = int(torch.randint(max(width - size, 0) + 1, ()))
        return self.region(top, top + size, left, left + size)

    def region(self, top: int, bottom: int, left: int, right: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Rows ``[top, bottom)`` and columns ``[left, right)`` (clipped to the image), as :meth:`crop`."""
        rows, cols = slice(max(top, 0), bottom), slice(max(left, 0), right)
        pixels = IntensityScaling.apply(self.image[rows, cols], self.low, self.high)
        classes, instances = self.decoder(self.mask[rows, cols], self.pair[1])
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)), classes, instances

    def tile(self, core: tuple[int, int, int, int], margin: int, ignore_index: int) -> tuple[np.ndarray, ...]:
        """The tile ``core`` read with ``margin`` pixels of context around it (inside the image),
        the context's mask pixels set to ``ignore_index``: it informs the prediction, is not scored."""
        height, width = self.image.shape[:2]
        top, bottom, left, right = core
        outer = (max(top - margin, 0), min(bottom + margin, height), max(left - margin, 0), min(right + margin, width))
        pixels, classes, instances = self.region(*outer)
        scored = np.zeros(classes.shape, bool)
        scored[top - outer[0]:bottom - outer[0], left - outer[2]:right - outer[2]] = True
        classes = np.where(scored, classes, ignore_index)
        return pixels, classes, None if instances is None else np.where(scored, instances, 0)

    def close(self) -> None:
        self.image.close()
        self.mask.close()
