"""Images read region by region: tiled or striped TIFF and OME-Zarr larger than memory.

tifffile exposes any TIFF series as a zarr store (``series.aszarr()``), so a window of a
50,000 x 50,000 slide decodes only the tiles it touches; an OME-Zarr folder is read with zarr
itself (its level 0, axes from the ``multiscales`` metadata). A :class:`LazyImage` is one 2-D
plane ``(H, W, C)`` of such a file: Z and T (and any other stacking axis except channels) are
*planes*, samples of their own, never channels (``slice_axis`` in :func:`open_planes`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from segkit.errors import SegkitError, shown

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
# Axes that hold channels (tifffile's S samples, C channels; OME's "c"); everything else that is
# neither Y nor X stacks planes.
CHANNEL_AXES = set("SC")
# At most this many pixels are read to estimate an image's intensity percentiles.
SAMPLE_PIXELS = 4_000_000


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is an OME-Zarr (or plain zarr) folder."""
    return path.is_dir() and (path.name.lower().endswith(ZARR_SUFFIXES) or (path / "zarr.json").exists()
                              or (path / ".zattrs").exists() or (path / ".zgroup").exists())


@dataclass
class LazyImage:
    """One plane ``(H, W, C)`` of an on-disk array; ``image[rows]`` or ``image[rows, cols]``
    decodes only that region and returns ``(h, w, C)`` numpy.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "big.tif"
        ...     tifffile.imwrite(path, np.arange(300 * 200, dtype=np.uint16).reshape(300, 200), tile=(64, 64))
        ...     image = open_planes(path)[0]
        ...     region = image[10:20, 5:9]
        >>> image.shape, region.shape, int(region[0, 0, 0])
        ((300, 200, 1), (10, 4, 1), 2005)
    """

    array: Any  # a zarr array (or numpy) with the axes below
    axes: str  # upper-case axis letters of ``array``, e.g. "ZYX", "YXS", "CYX"
    plane: tuple[int, ...] = ()  # index along each plane axis (in ``axes`` order)
    source: Path = Path()
    pixel_size: tuple[float, float] | None = None  # (y, x) in the file's unit, when it says
    channels: int | None = None  # convert every region to this many channels (grey <-> RGB, alpha dropped)
    _handle: Any = field(default=None, repr=False)

    @property
    def channel_axis(self) -> str | None:
        found = [axis for axis in self.axes if axis in CHANNEL_AXES]
        return found[0] if found else None

    @property
    def plane_axes(self) -> str:
        """The axes that stack planes (e.g. ``"Z"``, ``"TZ"``; ``""`` for one plane)."""
        return "".join(_plane_axes(self.axes))

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` as stored in the file."""
        sizes = dict(zip(self.axes, self.array.shape))
        channel = self.channel_axis
        return sizes["Y"], sizes["X"], sizes[channel] if channel else 1

    @property
    def shape(self) -> tuple[int, int, int]:
        height, width, stored = self.stored_shape
        return height, width, self.channels or stored

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return 3

    def _index(self, rows: slice, cols: slice) -> tuple[Any, ...]:
        planes = iter(self.plane)
        return tuple(rows if axis == "Y" else cols if axis == "X" else slice(None) if axis in CHANNEL_AXES
                     else next(planes) for axis in self.axes)

    def __getitem__(self, key: slice | tuple[slice, slice]) -> np.ndarray:
        rows, cols = (key, slice(None)) if isinstance(key, slice) else key
        block = np.asarray(self.array[self._index(rows, cols)])
        kept = [axis for axis in self.axes if axis in ("Y", "X") or axis in CHANNEL_AXES]
        order = [kept.index("Y"), kept.index("X")] + ([kept.index(self.channel_axis)] if self.channel_axis else [])
        block = block.transpose(order)
        block = block if self.channel_axis else block[..., None]
        if self.channels is not None and block.shape[-1] != self.channels:
            from segkit.data.files.readers import match_channels

            block = match_channels(block, self.channels, self.source)
        return block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole plane (only for images that fit in memory)."""
        whole = self[:, :]
        return whole if dtype is None else whole.astype(dtype)

    def sample(self, pixels: int = SAMPLE_PIXELS) -> np.ndarray:
        """About ``pixels`` pixels ``(n, C)`` spread over the image, read as whole row bands at
        regular intervals (for percentiles: never the whole image)."""
        height, width, channels = self.shape
        if height * width <= pixels:
            return self[:, :].reshape(-1, channels)
        band = max(1, min(height, 256))
        bands = max(1, pixels // (band * width))
        tops = np.linspace(0, height - band, bands).astype(int)
        return np.concatenate([self[top:top + band].reshape(-1, channels) for top in tops])

    def intensity_bounds(self, intensity: Any) -> tuple[np.ndarray, np.ndarray]:
        """``intensity`` (an :class:`~segkit.data.files.intensity.IntensityScaling`)'s per-channel
        bounds of the whole plane, from :meth:`sample` (never the whole plane of a slide)."""
        sample = self.sample()
        return intensity.bounds(sample.reshape(-1, 1, sample.shape[-1]))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _plane_axes(axes: str) -> list[str]:
    return [axis for axis in axes if axis not in ("Y", "X") and axis not in CHANNEL_AXES]


def _resolve_unknown_axis(axes: str, shape: tuple[int, ...], in_channels: int | None) -> str:
    """tifffile names an unlabelled leading axis I or Q (a plain ``(N, H, W)`` TIFF): channels
    when the file has no other channel axis and ``N == in_channels``, else planes (a stack)."""
    for unknown in "QI":
        if unknown in axes:
            size = shape[axes.index(unknown)]
            as_channels = in_channels is not None and size == in_channels and in_channels > 1 and not (
                set(axes) & CHANNEL_AXES)
            axes = axes.replace(unknown, "C" if as_channels else "Z", 1)
    return axes


def _planes(array: Any, axes: str, source: Path, pixel_size: tuple[float, float] | None,
            handle: Any, slice_axis: str | None) -> list[LazyImage]:
    stacking = _plane_axes(axes)
    if slice_axis is not None and slice_axis.upper() not in axes:
        raise SegkitError(f"{shown(source)}: data.slice_axis={slice_axis!r} is not one of its axes {axes}; "
                          f"use one of {', '.join(stacking) or 'none (it is one plane)'} or null")
    sizes = dict(zip(axes, array.shape))
    grid = np.ndindex(*[sizes[axis] for axis in stacking]) if stacking else iter([()])
    return [LazyImage(array, axes, tuple(index), source, pixel_size, _handle=handle) for index in grid]


def _tiff_pixel_size(tif: tifffile.TiffFile) -> tuple[float, float] | None:
    if tif.is_ome and tif.ome_metadata:
        import re

        found = {key: float(value) for key, value in re.findall(r'PhysicalSize([XY])="([0-9.eE+-]+)"', tif.ome_metadata)}
        if "X" in found and "Y" in found:
            return found["Y"], found["X"]
    page = tif.pages[0]
    x_res, y_res = page.tags.get("XResolution"), page.tags.get("YResolution")
    if x_res is None or y_res is None:
        return None
    (xn, xd), (yn, yd) = x_res.value, y_res.value
    if not (xn and yn) or (xn, xd) == (1, 1):
        return None
    return yd / yn, xd / xn


def open_planes(path: Path, slice_axis: str | None = None, in_channels: int | None = None) -> list[LazyImage]:
    """The 2-D planes of a TIFF or OME-Zarr file, each read lazily (see :class:`LazyImage`).

    A ``ZYX`` stack gives Z planes; ``TZCYX`` gives T x Z planes of C channels; a plain image one
    plane. ``slice_axis`` only checks that the named axis exists (every non-channel stacking axis
    is sliced). An unlabelled leading axis (a plain ``(N, H, W)`` TIFF) holds channels only when
    ``N == in_channels``. Pixel sizes come from OME metadata or the TIFF resolution tags.
    """
    path = Path(path)
    if is_zarr(path):
        return _open_zarr(path, slice_axis)
    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        import zarr

        array = zarr.open(series.aszarr(), mode="r")
        axes = _resolve_unknown_axis(series.axes.upper(), tuple(series.shape), in_channels)
        return _planes(array, axes, path, _tiff_pixel_size(tif), tif, slice_axis)
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise SegkitError(f"{shown(path)}: cannot read it as a TIFF ({type(error).__name__}: {error}); "
                          "re-export it as a (tiled) TIFF or OME-Zarr") from None


def _open_zarr(path: Path, slice_axis: str | None) -> list[LazyImage]:
    import zarr

    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        meta = multiscales[0]
        level = meta["datasets"][0]
        array = node[level["path"]]
        axes = "".join(str(axis["name"] if isinstance(axis, dict) else axis)[0].upper() for axis in meta["axes"])
        scale = next((t["scale"] for t in level.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
        pixel_size = (float(scale[-2]), float(scale[-1])) if scale else None
    elif hasattr(node, "shape"):
        array, pixel_size = node, None
        axes = {2: "YX", 3: "CYX", 4: "ZCYX", 5: "TCZYX"}.get(len(node.shape), "")
    else:
        raise SegkitError(f"{shown(path)}: a zarr group without OME 'multiscales' metadata; write it as OME-Zarr "
                          "(e.g. with ome-zarr-py) or as a single zarr array")
    if len(axes) != len(array.shape) or "Y" not in axes or "X" not in axes:
        raise SegkitError(f"{shown(path)}: axes {axes!r} do not fit its shape {tuple(array.shape)}; "
                          "its metadata must name a y and an x axis")
    return _planes(array, axes, path, pixel_size, None, slice_axis)


def metadata_json(image: LazyImage) -> str:
    """The axes and pixel size of ``image`` as one JSON line (written beside outputs)."""
    return json.dumps({"axes": image.axes, "pixel_size": image.pixel_size})
