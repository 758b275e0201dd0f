"""The files ``segkit-eval`` writes beside ``metrics.json``, and the figures that
``segkit-train`` logs to TensorBoard at test time (:class:`segkit.training.test_figures.TestFigures`).

=============================  ==========================================================
``confusion_matrix.png``       row-normalised confusion matrix, split and mIoU in the title
``per_class_iou.png``          IoU per class, absent classes marked, a line at the mIoU
``per_image.csv``              ``index, file, mIoU, pixel_acc``, one row per image
``per_image_confusion.npz``    ``confusion`` (N, K, K) int64 and ``files`` (N,)
``worst_images.png``           the ``figures.worst_k`` images of lowest mIoU
=============================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from segkit.scoring.figures import confusion_figure, per_class_iou_figure, save_png
from segkit.scoring.gallery import GalleryRow, gallery_figure
from segkit.scoring.metrics import scores_from_confusion
from segkit.scoring.per_image import PerImageTable
from segkit.training.object_scores import OBJECT_COLUMNS
from segkit.training.run_dir import CONFUSION_PNG, PER_CLASS_IOU_PNG, PER_IMAGE_CSV, PER_IMAGE_NPZ, WORST_IMAGES_PNG


def split_figures(confusion: np.ndarray, class_names: Sequence[str], split: str) -> dict[str, Figure]:
    """``{"confusion_matrix": Figure, "per_class_IoU": Figure}`` of a split's matrix (counts).

    Example:
        >>> figures = split_figures(np.array([[3, 1], [0, 4]]), ["sky", "sea"], "val")
        >>> sorted(figures), figures["confusion_matrix"].axes[0].get_title()
        (['confusion_matrix', 'per_class_IoU'], 'val: confusion matrix, mIoU 0.7750')
    """
    scores = scores_from_confusion(torch.as_tensor(np.asarray(confusion)))
    miou = float(scores["mIoU"])
    return {
        "confusion_matrix": confusion_figure(confusion, class_names, f"{split}: confusion matrix, mIoU {miou:.4f}"),
        "per_class_IoU": per_class_iou_figure(scores["IoU"].tolist(), class_names, miou, f"{split}: IoU per class"),
    }


def worst_figure(worst: Sequence[GalleryRow], class_names: Sequence[str], split: str,
                 ignore_index: int | None = 255, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> Figure:
    """The gallery of ``worst``, titled with the split and the number of images shown."""
    title = f"{split}: the {len(worst)} images of lowest mIoU"
    return gallery_figure(worst, class_names, title, ignore_index=ignore_index, mean=mean, std=std)


def write_eval_files(output_dir: Path, table: PerImageTable, worst: Sequence[GalleryRow] | None,
                     class_names: Sequence[str], split: str, ignore_index: int | None = 255,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     object_rows: Mapping[int, Sequence[float]] | None = None) -> list[Path]:
    """Write the files of the module docstring's table into ``output_dir``; return their paths
    (``worst_images.png`` only when ``worst`` is not ``None``); ``object_rows`` (dataset index ->
    values of :data:`segkit.training.object_scores.OBJECT_COLUMNS`) adds those columns to ``per_image.csv``.

    Example:
        >>> import tempfile
        >>> table = PerImageTable([0], ["a.png"], np.array([[[3, 1], [0, 4]]]))
        >>> [p.name for p in write_eval_files(Path(tempfile.mkdtemp()), table, None, ["sky", "sea"], "val")]
        ['confusion_matrix.png', 'per_class_iou.png', 'per_image.csv', 'per_image_confusion.npz']
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = split_figures(table.total(), class_names, split)
    written = [save_png(figures["confusion_matrix"], output_dir / CONFUSION_PNG),
               save_png(figures["per_class_IoU"], output_dir / PER_CLASS_IOU_PNG),
               table.write_csv(output_dir / PER_IMAGE_CSV, OBJECT_COLUMNS if object_rows else (), object_rows),
               table.write_npz(output_dir / PER_IMAGE_NPZ)]
    if worst is not None:
        gallery = worst_figure(worst, class_names, split, ignore_index, mean, std)
        written.append(save_png(gallery, output_dir / WORST_IMAGES_PNG))
    return written
