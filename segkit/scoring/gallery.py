"""A gallery of images with their truth and prediction, one row each: ``input | truth |
prediction``, masks in the PASCAL VOC colours (:mod:`segkit.palette`), ignored pixels in a
colour of their own. ``segkit-eval`` draws the worst images by mIoU with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from segkit.palette import colorize, voc_palette

# Ignored pixels (VOC's 255: light beige), whatever the data's ignore index.
IGNORE_COLOUR = tuple(int(v) for v in voc_palette()[255])
COLUMNS = ("input", "truth", "prediction")
TILE_INCHES = 2.6
# A legend entry per class shown, up to this many classes.
MAX_LEGEND_CLASSES = 30


class GalleryRow(Protocol):
    """What a row needs: the input ``(C, H, W)``, truth and prediction ``(H, W)``, a name and a score."""

    image: torch.Tensor
    truth: torch.Tensor
    prediction: torch.Tensor
    file: str
    miou: float


def display_image(image: torch.Tensor, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> np.ndarray:
    """A normalised input ``(C, H, W)`` as RGB floats in ``[0, 1]`` ``(H, W, 3)``: undone
    normalisation (``x * std + mean`` when they fit the channels), the first channel in grey
    for 1 or 2 channels, the first three as RGB for 3 or more, min-max scaled per image.

    Example:
        >>> display_image(torch.tensor([[[-1.0, 1.0]]]), mean=[0.5], std=[0.25])[0].tolist()
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    """
    pixels = image.detach().float().cpu()
    channels = pixels.shape[0]
    if mean is not None and std is not None and len(mean) in (1, channels) and len(std) in (1, channels):
        pixels = pixels * torch.tensor(list(std)).view(-1, 1, 1) + torch.tensor(list(mean)).view(-1, 1, 1)
    shown = pixels[:3] if channels >= 3 else pixels[:1].expand(3, -1, -1)
    low, high = shown.min(), shown.max()
    scaled = (shown - low) / (high - low).clamp_min(1e-8)
    return scaled.permute(1, 2, 0).numpy()


def mask_colours(mask: torch.Tensor, ignore_index: int | None = 255) -> np.ndarray:
    """Class indices ``(H, W)`` as VOC colours ``(H, W, 3)`` uint8; ``ignore_index`` pixels in
    :data:`IGNORE_COLOUR`.

    Example:
        >>> mask_colours(torch.tensor([[0, 1, 255]])).tolist()
        [[[0, 0, 0], [128, 0, 0], [224, 224, 192]]]
    """
    rgb = colorize(mask).permute(1, 2, 0).numpy().copy()
    if ignore_index is not None:
        rgb[(mask == ignore_index).numpy()] = IGNORE_COLOUR
    return rgb


def gallery_size(rows: int) -> tuple[float, float]:
    """Figure ``(width, height)`` in inches for ``rows`` rows of three tiles.

    Example:
        >>> gallery_size(2)
        (8.3, 6.7)
    """
    return round(3 * TILE_INCHES + 0.5, 2), round(max(1, rows) * TILE_INCHES + 1.5, 2)


def _legend(figure: Figure, rows: Sequence[GalleryRow], class_names: Sequence[str], ignore_index: int | None) -> None:
    shown = sorted({int(v) for row in rows for mask in (row.truth, row.prediction) for v in mask.unique().tolist()})
    classes = [c for c in shown if 0 <= c < len(class_names) and c != ignore_index]
    if len(classes) > MAX_LEGEND_CLASSES:
        return
    palette = voc_palette()
    handles = [Patch(color=tuple(palette[c].float().div(255).tolist()), label=class_names[c]) for c in classes]
    if ignore_index is not None and any(bool((row.truth == ignore_index).any()) for row in rows):
        handles.append(Patch(color=tuple(v / 255 for v in IGNORE_COLOUR), label="ignored"))
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8,
                      frameon=False)


def gallery_figure(rows: Sequence[GalleryRow], class_names: Sequence[str], title: str,
                   ignore_index: int | None = 255, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> Figure:
    """One row per item of ``rows``: ``input | truth | prediction``, the row's file and mIoU on
    its left, a legend of the classes shown (and of ignored pixels) below.

    Example:
        >>> from types import SimpleNamespace
        >>> row = SimpleNamespace(image=torch.rand(1, 8, 8), truth=torch.zeros(8, 8, dtype=torch.long),
        ...                       prediction=torch.ones(8, 8, dtype=torch.long), file="a.png", miou=0.0)
        >>> len(gallery_figure([row, row], ["bg", "fg"], "worst").axes)
        6
    """
    figure = Figure(figsize=gallery_size(len(rows)), layout="constrained")
    figure.suptitle(title)
    if not rows:
        figure.text(0.5, 0.5, "no image with a scored pixel", ha="center", va="center")
        return figure
    grid = figure.subplots(len(rows), len(COLUMNS), squeeze=False)
    for r, row in enumerate(rows):
        tiles = (display_image(row.image, mean, std), mask_colours(row.truth, ignore_index),
                 mask_colours(row.prediction, None))
        for c, tile in enumerate(tiles):
            axes = grid[r, c]
            axes.imshow(tile, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if r == 0:
                axes.set_title(COLUMNS[c], fontsize=10)
        score = "nan" if math.isnan(row.miou) else f"{row.miou:.3f}"
        grid[r, 0].set_ylabel(f"{row.file}\nmIoU {score}", fontsize=8)
    _legend(figure, rows, class_names, ignore_index)
    return figure
