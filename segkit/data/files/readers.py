"""Reading images and masks as microscopes and scanners write them, into numpy arrays.

TIFF goes through ``tifffile`` (the field's reader: 8/16/32-bit integer and float, multi-page
and planar stacks, any number of samples); PNG, JPEG and the rest through Pillow. Every image
comes back as ``(H, W, C)`` in its own dtype (``uint8``, ``uint16``, ``float32``...), so that
intensity scaling (:mod:`segkit.data.files.intensity`) sees the real range instead of a value
Pillow clipped to 8 bits.

Every problem is a one-line :class:`SegkitError` naming the file and the fix; a file name
with a newline or another unprintable character is shown escaped (:func:`shown`), so that the
message stays one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from segkit.errors import SegkitError, shown

TIFF_SUFFIXES = (".tif", ".tiff")
# Pillow modes that hold colours to be converted, not values to be kept: palette images read as
# colours (for images; masks may read palettes as indices), and colour spaces other than RGB.
_TO_RGB = {"P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "1": "L"}
# tifffile axis codes that stack planes of one image (channels, pages, samples stored planar).
_PLANE_AXES = set("CSIQE")
# Axes a file labels as a Z stack or a time series: planes, never channels.
_STACK_AXES = set("ZT")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, tifffile.TiffFileError)
# Pillow modes whose last band is alpha (or padding): dropped to read them as colours.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA", "RGBX"}
# TIFF ExtraSamples values meaning alpha: associated (premultiplied) and unassociated.
_TIFF_ALPHA = (1, 2)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"



@dataclass(frozen=True)
class Header:
    """What a file's header says, without decoding its pixels."""

    height: int
    width: int
    channels: int
    dtype: str
    alpha: bool = False


def unreadable(path: Path, error: BaseException) -> SegkitError:
    """The error for a file that cannot be opened or decoded (not an image, truncated, corrupt)."""
    reason = " ".join(str(error).split())[:200]
    return SegkitError(
        f"{shown(path)}: unreadable, truncated or not an image ({type(error).__name__}: {reason}); "
        "re-export it as PNG/TIFF, or remove it together with its image or mask"
    )


def _png_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR chunk, without decoding anything."""
    try:
        with path.open("rb") as file:
            head = file.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def too_large(path: Path, error: Image.DecompressionBombError) -> SegkitError:
    """The error for a file whose header claims more pixels than Pillow's decompression-bomb limit."""
    numbers = [int(n) for n in re.findall(r"\d+", str(error))]
    pixels, limit = (numbers + [0, 0])[:2]
    size = _png_size(path)
    claimed = f"{size[0]}x{size[1]} (width x height), {size[0] * size[1]:,} pixels" if size else f"{pixels:,} pixels"
    return SegkitError(
        f"{shown(path)}: its header claims {claimed}, over the {limit:,}-pixel limit against decompression "
        "bombs; if the header is corrupt, re-export the file; if the image is that large, cut it into tiles"
    )


def non_finite(array: np.ndarray, path: Path) -> SegkitError | None:
    """The error for a float image holding NaN or inf (``None``: all finite, or not float).

    Example:
        >>> non_finite(np.array([[[0.5], [np.nan]]], np.float32), Path("a.tif")) is not None
        True
    """
    if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
        return None
    bad = int((~np.isfinite(array)).any(axis=-1).sum())
    total = array.shape[0] * array.shape[1]
    return SegkitError(
        f"{shown(path)}: {bad:,} of {total:,} pixels are NaN or infinite ({array.dtype} image), which would make "
        "the loss and predictions NaN; replace them in the file (e.g. numpy.nan_to_num) or leave the file out"
    )


def _tiff_layout(shape: tuple[int, ...], axes: str, path: Path) -> tuple[int, int, int, bool]:
    """``(height, width, channels, channels_first)`` of a tifffile series."""
    if len(shape) == 2:
        return shape[0], shape[1], 1, False
    if len(shape) == 3 and axes.endswith("S"):
        return shape[0], shape[1], shape[2], False
    if len(shape) == 3 and axes[0] in _STACK_AXES:
        kind = {"Z": "Z stack", "T": "time series"}[axes[0]]
        raise SegkitError(
            f"{shown(path)}: a {kind} of {shape[0]} planes (axes {axes}), not one image with channels; training "
            "reads one 2-D image per file: save each plane as its own file (segkit-predict reads "
            "stacks plane by plane)"
        )
    if len(shape) == 3 and axes[0] in _PLANE_AXES:
        return shape[1], shape[2], shape[0], True
    raise SegkitError(
        f"{shown(path)}: TIFF of shape {shape} (axes {axes}) is not one 2-D image with channels; "
        "save one image per file as (H, W), (H, W, C) or (C, H, W)"
    )


def _tiff_alpha(series: tifffile.TiffPageSeries) -> bool:
    """Whether the last sample of a TIFF series is marked as alpha (its ExtraSamples tag)."""
    extra = series.keyframe.extrasamples
    return "S" in series.axes and bool(extra) and int(extra[-1]) in _TIFF_ALPHA


def read_header(path: Path) -> Header:
    """Size, channels and dtype from the file's header (TIFF tags or Pillow's lazy open).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "a.tif"
        ...     tifffile.imwrite(path, np.zeros((3, 5, 7), np.uint16), photometric="minisblack")
        ...     read_header(path)
        Header(height=5, width=7, channels=3, dtype='uint16', alpha=False)
    """
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                height, width, channels, _ = _tiff_layout(tuple(series.shape), series.axes, path)
                return Header(height, width, channels, str(series.dtype), _tiff_alpha(series))
        with Image.open(path) as image:
            mode = _TO_RGB.get(image.mode, image.mode)
            bands = 1 if mode.startswith("I;16") else Image.getmodebands(mode)
            dtype = {"I": "int32", "F": "float32"}.get(mode, "uint16" if mode.startswith("I;16") else "uint8")
            return Header(image.size[1], image.size[0], bands, dtype, mode in _ALPHA_MODES)
    except DECODE_ERRORS as error:
        raise unreadable(path, error) from None
    except Image.DecompressionBombError as error:
        raise too_large(path, error) from None


def read_array(path: Path, palette_as_indices: bool = False, check_finite: bool = True) -> np.ndarray:
    """The pixels of ``path`` as ``(H, W, C)`` in the file's own dtype (see :func:`read_pixels`).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "a.png"
        ...     Image.fromarray(np.full((4, 6), 40000, np.uint16)).save(path)
        ...     array = read_array(path)
        >>> array.shape, array.dtype, int(array.max())
        ((4, 6, 1), dtype('uint16'), 40000)
    """
    return read_pixels(path, palette_as_indices, check_finite)[0]


def read_pixels(path: Path, palette_as_indices: bool = False, check_finite: bool = True) -> tuple[np.ndarray, bool]:
    """``(pixels (H, W, C) in the file's own dtype, whether the last channel is alpha)``.

    ``palette_as_indices`` reads a palette ("P") PNG as its indices (VOC-style class masks)
    instead of its colours. ``check_finite`` refuses float pixels that are NaN or inf (masks
    leave that to :class:`segkit.data.files.masks.MaskDecoder`, which names the value).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "a.png"
        ...     Image.new("RGBA", (6, 4)).save(path)
        ...     array, alpha = read_pixels(path)
        >>> array.shape, alpha
        ((4, 6, 4), True)
    """
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                _, _, _, channels_first = _tiff_layout(tuple(series.shape), series.axes, path)
                alpha = _tiff_alpha(series)
                array = series.asarray()
            if channels_first:
                array = np.moveaxis(array, 0, -1)
        else:
            with Image.open(path) as image:
                image.load()
                keep = image.mode in ("P", "PA") and palette_as_indices
                if not keep and image.mode in _TO_RGB:
                    image = image.convert(_TO_RGB[image.mode])
                alpha = image.mode in _ALPHA_MODES
                array = np.asarray(image)
    except DECODE_ERRORS as error:
        raise unreadable(path, error) from None
    except Image.DecompressionBombError as error:
        raise too_large(path, error) from None
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == bool:
        array = array.astype(np.uint8)
    array = array[..., None] if array.ndim == 2 else array
    problem = non_finite(array, path) if check_finite else None
    if problem is not None:
        raise problem
    return array, alpha


def _luma(array: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of ``(H, W, 3)``, in the input's dtype (as Pillow's ``convert("L")``)."""
    grey = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if np.issubdtype(array.dtype, np.integer):
        grey = np.rint(grey)
    return grey.astype(array.dtype)[..., None]


def match_channels(array: np.ndarray, in_channels: int, path: Path, alpha: bool | None = None) -> np.ndarray:
    """``array`` ``(H, W, C)`` with ``in_channels`` channels, or a :class:`SegkitError`.

    Grey files become RGB by repetition, RGB files grey by luma (as Pillow converts), and an
    8-bit alpha channel (RGBA, LA) is dropped; any other mismatch is the user's to settle.
    ``alpha``: whether the last channel is alpha (:func:`read_pixels`); ``None`` reads it from
    ``path``'s header when it matters. A fourth channel not marked as alpha (RGB + near-infrared)
    is data, never dropped.

    Example:
        >>> match_channels(np.zeros((2, 2, 1), np.uint8), 3, Path("a.png")).shape
        (2, 2, 3)
        >>> match_channels(np.zeros((2, 2, 4), np.uint8), 3, Path("a.png"), alpha=True).shape
        (2, 2, 3)
    """
    channels = array.shape[-1]
    if channels == in_channels:
        return array
    note = ""
    if array.dtype == np.uint8 and channels in (2, 4):
        if alpha is None:
            alpha = read_header(path).alpha
        if not alpha:
            note = " (the last is not marked as alpha, so it is kept as data)"
        else:
            array, channels = array[..., :-1], channels - 1  # alpha of an 8-bit LA/RGBA image
            if channels == in_channels:
                return array
    if channels == 1 and in_channels == 3:
        return np.repeat(array, 3, axis=-1)
    if channels == 3 and in_channels == 1:
        return _luma(array)
    raise SegkitError(
        f"{shown(path)}: image has {channels} channels{note} but data.in_channels={in_channels}; "
        f"set data.in_channels={channels} (every image of the data set needs that many)"
    )
