"""Figures of a split's scores: the row-normalised confusion matrix and the IoU of each class.

Built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``: no global state, no GUI
backend), saved as PNG by :func:`save_png` or turned into an RGB array for TensorBoard by
:func:`figure_to_array`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Up to this many classes, the confusion matrix's cells show their values.
MAX_ANNOTATED_CLASSES = 20


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each truth row divided by its pixel count (sums to 1); rows without pixels are NaN.

    Example:
        >>> row_normalised(np.array([[3, 1], [0, 0]])).tolist()
        [[0.75, 0.25], [nan, nan]]
    """
    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rows > 0, counts / rows, np.nan)


def _side(num_classes: int) -> float:
    """Figure inches for ``num_classes`` labels along one axis (5 to 22)."""
    return float(min(22.0, max(5.0, 2.5 + 0.45 * num_classes)))


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """The confusion matrix ``confusion`` (counts, rows = truth) row-normalised, as a heat map
    with the class names on both axes, the values in the cells (up to
    :data:`MAX_ANNOTATED_CLASSES` classes), a colour bar and ``title``. Truth rows without
    pixels stay blank.

    Example:
        >>> figure = confusion_figure(np.array([[3, 1], [0, 0]]), ["sky", "sea"], "val")
        >>> figure.axes[0].get_xlabel(), figure.axes[0].get_ylabel()
        ('prediction', 'truth')
    """
    normalised = row_normalised(confusion)
    k = len(class_names)
    side = _side(k)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(normalised), vmin=0.0, vmax=1.0, cmap="Blues", interpolation="nearest")
    axes.set_facecolor("white")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the truth row")
    ticks = np.arange(k)
    font = 9 if k <= MAX_ANNOTATED_CLASSES else max(4, 9 - k // 20)
    axes.set_xticks(ticks, labels=list(class_names), rotation=90, fontsize=font)
    axes.set_yticks(ticks, labels=list(class_names), fontsize=font)
    axes.set_xlabel("prediction")
    axes.set_ylabel("truth")
    axes.set_title(title)
    if k <= MAX_ANNOTATED_CLASSES:
        for (row, col), value in np.ndenumerate(normalised):
            if not math.isnan(value):
                axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                          color="white" if value > 0.5 else "black")
    return figure


def per_class_iou_figure(ious: Sequence[float], class_names: Sequence[str], miou: float, title: str) -> Figure:
    """A bar per class of its IoU, a dashed line at the mIoU; a class absent from truth and
    prediction (IoU NaN) gets no bar but an ``absent`` mark.

    Example:
        >>> figure = per_class_iou_figure([0.5, float("nan")], ["sky", "sea"], 0.5, "val")
        >>> [float(p.get_height()) for p in figure.axes[0].patches]
        [0.5]
    """
    values = np.asarray(ious, dtype=np.float64)
    k = len(class_names)
    figure = Figure(figsize=(min(22.0, max(5.0, 1.5 + 0.4 * k)), 4.5), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(k)
    drawn = ~np.isnan(values)
    bars = axes.bar(positions[drawn], values[drawn], color="tab:blue")
    if k <= 40:
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    for position in positions[~drawn]:
        axes.text(position, 0.02, "absent", rotation=90, ha="center", va="bottom", fontsize=8, color="tab:red")
    if not math.isnan(miou):
        axes.axhline(miou, color="black", linestyle="--", linewidth=1, label=f"mIoU {miou:.4f}")
        axes.legend(loc="upper right")
    axes.set_xticks(positions, labels=list(class_names), rotation=90 if k > 8 else 0, fontsize=9)
    axes.set_xlim(-0.6, k - 0.4)
    axes.set_ylim(0.0, 1.05)
    axes.set_ylabel("IoU")
    axes.set_title(title)
    return figure


def figure_to_array(figure: Figure) -> np.ndarray:
    """``figure`` rendered as an RGB uint8 array ``(H, W, 3)``.

    Example:
        >>> figure_to_array(Figure(figsize=(2, 1), dpi=50)).shape
        (50, 100, 3)
    """
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``figure`` to ``path`` as a PNG and return ``path``."""
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=dpi, format="png")
    return path
