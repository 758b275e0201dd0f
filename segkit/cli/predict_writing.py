"""How ``segkit-predict`` writes one input's outputs: class masks (palette PNG, label TIFF or
OME-Zarr, the last two band by band), instance labels, probabilities and the overlay."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from PIL import Image

from segkit.atomic import atomic_path
from segkit.data.files.intensity import IntensityScaling
from segkit.data.files.lazy import LazyImage
from segkit.errors import SegkitError, shown
from segkit.inference.predict import Band
from segkit.inference.writers import Rows, write_label_tiff, write_label_zarr
from segkit.palette import colorize, voc_palette

Predictor = Callable[..., Iterator[Band]]  # predictor(plane, probabilities=bool) -> bands


def overlay_image(pixels: np.ndarray, mask: np.ndarray, intensity: IntensityScaling) -> np.ndarray:
    """The image (scaled as the net saw it, grey as RGB) half-blended with the class colours."""
    shown_pixels = np.clip(intensity(pixels), 0, 1)
    shown_pixels = shown_pixels[..., :3] if shown_pixels.shape[-1] >= 3 else np.repeat(shown_pixels[..., :1], 3, axis=-1)
    colours = colorize(torch.from_numpy(mask)).permute(1, 2, 0).numpy()
    return (127.5 * shown_pixels + 0.5 * colours).astype(np.uint8)


def save_png(array: np.ndarray, path: Path, palette: bool) -> None:
    """Write next to ``path`` then rename, so an interrupted run leaves no partial file."""
    if palette:  # share the mask's memory instead of copying it (large images)
        height, width = array.shape
        image = Image.frombuffer("P", (width, height), np.ascontiguousarray(array), "raw", "P", 0, 1)
        image.putpalette(voc_palette().flatten().tolist())
    else:
        image = Image.fromarray(array)
    with atomic_path(path) as partial:
        image.save(partial, format="PNG")


def layout(planes: list[np.ndarray | LazyImage]) -> tuple[tuple[int, ...], str, tuple[float, float] | None]:
    """``(shape, axes, pixel size)`` of the label image of ``planes``: the input's stacking axes
    (a stack's Z, T...) then Y and X; its channels are gone."""
    first = planes[0]
    height, width = first.shape[:2]
    if not isinstance(first, LazyImage) or not first.plane_axes:
        return (height, width), "YX", getattr(first, "pixel_size", None)
    sizes = dict(zip(first.axes, first.array.shape))
    grid = tuple(sizes[axis] for axis in first.plane_axes)
    return grid + (height, width), first.plane_axes + "YX", first.pixel_size


def write_outputs(path: Path, planes: list[np.ndarray | LazyImage], files: dict[str, Path], kind: str,
                  num_classes: int, predictor: Predictor, intensity: IntensityScaling) -> None:
    """Predict every plane of ``path`` and write ``files`` (see :func:`segkit.cli.predict_outputs.output_files`)."""
    shape, axes, pixel_size = layout(planes)
    if kind == "png" and len(planes) > 1:
        raise SegkitError(f"{shown(path)}: a stack of {len(planes)} planes (axes {axes}) cannot be one PNG; "
                          "use save.format=tiff or save.format=zarr")
    if "overlay" in files and len(planes) > 1:
        raise SegkitError(f"{shown(path)}: save.overlay=true draws one plane, but this is a stack of {len(planes)}; "
                          "leave save.overlay off for stacks")
    want_probabilities = "probabilities" in files or "instances" in files
    probabilities = None
    if "probabilities" in files:
        probabilities = open_memmap(files["probabilities"], mode="w+", dtype=np.float16,
                                    shape=shape[:-2] + (num_classes,) + shape[-2:])
    instances: list[np.ndarray] = []

    def plane_bands(index: int, plane: np.ndarray | LazyImage) -> Iterator[Rows]:
        target = None if probabilities is None else probabilities.reshape(-1, *probabilities.shape[-3:])[index]
        foreground = np.zeros(plane.shape[:2], np.float32) if "instances" in files else None
        for top, classes, probs in predictor(plane, probabilities=want_probabilities):
            rows = slice(top, top + classes.shape[0])
            if target is not None and probs is not None:
                target[:, rows] = probs
            if foreground is not None and probs is not None:
                foreground[rows] = 1.0 - probs[0]  # objects: any class but the background (class 0)
            yield top, classes
        if foreground is not None:
            from segkit.scoring.objects import instances_from_foreground

            instances.append(instances_from_foreground(foreground))

    bands = (plane_bands(index, plane) for index, plane in enumerate(planes))
    if kind == "png":
        mask = np.empty(shape, np.uint8)
        for top, classes in next(bands):
            mask[top:top + classes.shape[0]] = classes
        save_png(mask, files["mask"], palette=True)
        if "overlay" in files:
            save_png(overlay_image(np.asarray(planes[0]), mask, intensity), files["overlay"], palette=False)
    else:
        writer = write_label_zarr if kind == "zarr" else write_label_tiff
        writer(files["mask"], bands, shape, np.dtype(np.uint8), axes, pixel_size)
        if "overlay" in files:  # one plane (refused above for stacks), read back from the file just written
            from segkit.data.files.lazy import open_planes

            written = open_planes(files["mask"])[0]
            mask = written[:, :][..., 0]
            written.close()
            save_png(overlay_image(np.asarray(planes[0]), mask, intensity), files["overlay"], palette=False)
    if probabilities is not None:
        probabilities.flush()
        del probabilities
    if instances:
        largest = max(int(labels.max()) for labels in instances)
        dtype = np.dtype(np.uint16 if largest < 2**16 else np.uint32)
        writer = write_label_zarr if files["instances"].suffix == ".zarr" else write_label_tiff
        writer(files["instances"], ([(0, labels.astype(dtype))] for labels in instances), shape, dtype, axes, pixel_size)
