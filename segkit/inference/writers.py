"""Label images that napari and Fiji open, written band by band: tiled TIFF and OME-Zarr.

A prediction arrives as bands of rows of any height (:func:`segkit.inference.predict.predict_bands`);
the writers re-cut them into tile-high blocks and write each block as soon as it is complete,
so a label image larger than memory is never whole in memory. Axes (a stack's Z, T...) and the
pixel size of the input are kept. Both are written beside their final path and renamed into
place at the end, so an interrupted run leaves the previous output, or none, never a partial one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from segkit.atomic import atomic_path

TILE = 256  # tile side of the written TIFF and chunk side of the zarr (napari's and Fiji's usual)
Rows = tuple[int, np.ndarray]  # (first row, rows (h, W))


def row_blocks(bands: Iterable[Rows], block: int) -> Iterator[Rows]:
    """Bands of rows of any heights, in order, re-cut into blocks of exactly ``block`` rows
    (the last one shorter).

    Example:
        >>> bands = [(0, np.zeros((3, 4))), (3, np.ones((4, 4))), (7, np.zeros((1, 4)))]
        >>> [(top, rows.shape[0]) for top, rows in row_blocks(bands, 5)]
        [(0, 5), (5, 3)]
    """
    pending: list[np.ndarray] = []
    held, top = 0, 0
    for _, rows in bands:
        pending.append(rows)
        held += rows.shape[0]
        while held >= block:
            joined = np.concatenate(pending)
            yield top, joined[:block]
            top, held = top + block, held - block
            pending = [joined[block:]] if held else []
    if held:
        yield top, np.concatenate(pending)


def write_label_tiff(path: Path, planes: Iterable[Iterable[Rows]], shape: tuple[int, ...], dtype: np.dtype,
                     axes: str, pixel_size: tuple[float, float] | None = None, tile: int = TILE) -> None:
    """A tiled, zlib-compressed OME-TIFF of ``shape`` (planes..., H, W) with ``axes`` (e.g.
    ``"ZYX"``), from the bands of each plane in order; never holds more than a tile row.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels.tif"
        >>> plane = [(0, np.full((300, 70), 3, np.uint8))]
        >>> write_label_tiff(path, [plane, plane], (2, 300, 70), np.dtype(np.uint8), "ZYX", (0.5, 0.5))
        >>> with tifffile.TiffFile(path) as tif:
        ...     tif.series[0].axes, tif.series[0].shape, int(tif.asarray().max())
        ('ZYX', (2, 300, 70), 3)
    """
    height, width = shape[-2:]
    columns = -(-width // tile) * tile

    def tiles() -> Iterator[np.ndarray]:
        for bands in planes:
            for _, rows in row_blocks(bands, tile):
                block = np.zeros((tile, columns), dtype)
                block[:rows.shape[0], :width] = rows
                for left in range(0, columns, tile):
                    yield block[:, left:left + tile]

    metadata: dict[str, object] = {"axes": axes}
    if pixel_size is not None:
        metadata.update(PhysicalSizeY=float(pixel_size[0]), PhysicalSizeX=float(pixel_size[1]))
    with atomic_path(path) as partial:
        tifffile.imwrite(partial, tiles(), shape=shape, dtype=dtype, tile=(tile, tile), compression="zlib",
                         photometric="minisblack", metadata=metadata, ome=True)


def write_label_zarr(path: Path, planes: Iterable[Iterable[Rows]], shape: tuple[int, ...], dtype: np.dtype,
                     axes: str, pixel_size: tuple[float, float] | None = None, chunk: int = TILE) -> None:
    """An OME-Zarr (NGFF 0.4 ``multiscales``, one level ``0``) label image of ``shape`` with
    ``axes``, written a chunk row at a time.

    Example:
        >>> import tempfile, zarr
        >>> path = Path(tempfile.mkdtemp()) / "labels.zarr"
        >>> write_label_zarr(path, [[(0, np.ones((40, 30), np.uint16))]], (40, 30), np.dtype(np.uint16), "YX")
        >>> group = zarr.open_group(str(path), mode="r")
        >>> group["0"].shape, [axis["name"] for axis in group.attrs["multiscales"][0]["axes"]]
        ((40, 30), ['y', 'x'])
    """
    import zarr

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        try:  # NGFF 0.4 is stored in zarr's format 2 (what napari-ome-zarr and Fiji's readers expect)
            group = zarr.open_group(str(partial), mode="w", zarr_format=2)
        except TypeError:  # zarr 2: format 2 is all it writes
            group = zarr.open_group(str(partial), mode="w")
        leading = len(shape) - 2
        create = getattr(group, "create_array", None) or group.create_dataset  # zarr 3 / zarr 2
        array = create("0", shape=shape, chunks=(1,) * leading + (chunk, chunk), dtype=dtype, fill_value=0)
        plane_indices = np.ndindex(*shape[:-2]) if leading else iter([()])
        for index, bands in zip(plane_indices, planes):
            for top, rows in row_blocks(bands, chunk):
                array[tuple(index) + (slice(top, top + rows.shape[0]), slice(None))] = rows
        kinds = {"Y": "space", "X": "space", "Z": "space", "T": "time", "C": "channel"}
        scale = [1.0] * leading + (list(pixel_size) if pixel_size is not None else [1.0, 1.0])
        group.attrs["multiscales"] = [{
            "version": "0.4", "name": path.stem,
            "axes": [{"name": axis.lower(), "type": kinds.get(axis, "space")} for axis in axes],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        }]
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
