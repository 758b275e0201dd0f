"""Scores of the nuclei benchmark: pixel IoU from one confusion matrix over a split, and object
F1 (predicted components matched to true instances at IoU > 0.5), for Otsu thresholding, for
the masks a trained model predicted (``segkit-predict``) and for a classic Otsu + distance
watershed that splits touching nuclei (:func:`watershed_scores`, which adds the average
precision of :mod:`segkit.scoring.objects`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from segkit.benchmarks.userdata_render import separated_foreground
from segkit.errors import SegkitError

__all__ = ["nuclei_scores", "object_f1", "otsu_scores", "otsu_threshold", "predicted_scores", "watershed_baseline",
           "watershed_scores"]


def otsu_threshold(image: np.ndarray, bins: int = 1024) -> float:
    """Otsu's threshold (maximal between-class variance) from a ``bins``-bin histogram:
    the lower edge of the first foreground bin, so foreground is ``image >= threshold``.

    Example:
        >>> 120 < otsu_threshold(np.array([100, 110, 120, 5000, 5100, 5200], np.uint16)) <= 5000
        True
    """
    counts, edges = np.histogram(image, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    w1 = counts.sum() - w0
    m0 = np.cumsum(counts * centres)[:-1] / np.maximum(w0, 1)
    m1 = ((counts * centres).sum() - np.cumsum(counts * centres)[:-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(between.argmax()) + 1])


def object_f1(pred_fg: np.ndarray, instances: np.ndarray) -> dict[str, Any]:
    """Object-level scores: 4-connected components of ``pred_fg`` matched to the instances of
    ``instances`` (0 = background) at IoU > 0.5, a one-to-one matching by construction.

    Returns ``precision``, ``recall``, ``f1`` and the counts ``matched``, ``predicted``, ``true``.

    Example:
        >>> inst = np.array([[1, 1, 0, 2, 2]])
        >>> object_f1(inst > 0, inst)["f1"], object_f1(np.ones((1, 5), bool), inst)["f1"]
        (1.0, 0.0)
    """
    pred, n_pred = ndimage.label(pred_fg)
    true_ids = np.unique(instances[instances > 0])
    n_true = int(true_ids.size)
    matched = 0
    if n_pred and n_true:
        lookup = np.zeros(int(instances.max()) + 1, np.int64)
        lookup[true_ids] = np.arange(1, n_true + 1)
        true = lookup[instances]
        joint = np.bincount((pred * (n_true + 1) + true).ravel(), minlength=(n_pred + 1) * (n_true + 1))
        inter = joint.reshape(n_pred + 1, n_true + 1)[1:, 1:]
        area_pred = np.bincount(pred.ravel(), minlength=n_pred + 1)[1:]
        area_true = np.bincount(true.ravel(), minlength=n_true + 1)[1:]
        iou = inter / (area_pred[:, None] + area_true[None, :] - inter)
        matched = int((iou > 0.5).sum())
    return _f1(matched, n_pred, n_true)


def _f1(matched: int, predicted: int, true: int) -> dict[str, Any]:
    precision = matched / predicted if predicted else float(true == 0)
    recall = matched / true if true else 1.0
    f1 = 2 * matched / (predicted + true) if predicted + true else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched, "predicted": predicted, "true": true}


def nuclei_scores(root: Path, split: str, predict: Callable[[Path, np.ndarray], np.ndarray]) -> dict[str, Any]:
    """Scores of ``predict(image path, image) -> foreground (H, W) bool`` on ``root/split`` (a
    :func:`segkit.benchmarks.userdata.write_nuclei_dataset` tree) against the separated
    foreground (touching instances' border pixels are background, as segkit's
    ``mask_type=instances`` labels them): ``iou_background``, ``iou_foreground``, ``mIoU`` from
    one confusion matrix over the split, and object ``precision``/``recall``/``f1`` from the
    pooled counts of :func:`object_f1`.
    """
    import tifffile

    images = _nuclei_images(root, split)
    hist = np.zeros((2, 2), np.int64)
    counts = np.zeros(3, np.int64)
    for path in images:
        image = tifffile.imread(path)
        instances = tifffile.imread(path.parent.parent / "masks" / path.name)
        pred = np.asarray(predict(path, image), bool)
        truth = separated_foreground(instances)
        hist += np.bincount(truth.ravel() * 2 + pred.ravel(), minlength=4).reshape(2, 2)
        scores = object_f1(pred, instances)
        counts += [scores["matched"], scores["predicted"], scores["true"]]
    return {"images": len(images), **_pixel_ious(hist), **_f1(*(int(c) for c in counts))}


def _nuclei_images(root: Path, split: str) -> list[Path]:
    images = sorted((Path(root) / split / "images").glob("*.tif"))
    if not images:
        raise SegkitError(f"{Path(root) / split / 'images'}: no .tif images; write some with write-nuclei")
    return images


def _pixel_ious(hist: np.ndarray) -> dict[str, float]:
    """``iou_background``, ``iou_foreground`` and ``mIoU`` of a 2x2 (true, predicted) confusion matrix."""
    iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return {"iou_background": float(iou[0]), "iou_foreground": float(iou[1]), "mIoU": float(iou.mean())}


def otsu_scores(root: Path, split: str = "val") -> dict[str, Any]:
    """:func:`nuclei_scores` of Otsu's threshold, per image.

    Example:
        >>> import tempfile
        >>> from segkit.benchmarks.userdata import write_nuclei_dataset
        >>> root = write_nuclei_dataset(Path(tempfile.mkdtemp()) / "n", train=0, val=1, size=(64, 64))
        >>> 0 <= otsu_scores(root)["mIoU"] <= 1
        True
    """
    return nuclei_scores(root, split, lambda _, image: image >= otsu_threshold(image))


def predicted_scores(root: Path, predictions: Path, split: str = "val", object_class: int = 1) -> dict[str, Any]:
    """:func:`nuclei_scores` of the masks in ``predictions`` (``<stem>.png`` class indices, as
    ``segkit-predict`` writes them); foreground is ``object_class``."""
    def read(path: Path, _: np.ndarray) -> np.ndarray:
        mask_path = Path(predictions) / f"{path.stem}.png"
        if not mask_path.is_file():
            raise SegkitError(f"{mask_path}: no predicted mask for {path}; run segkit-predict on {path.parent}")
        return np.array(Image.open(mask_path)) == object_class

    return nuclei_scores(root, split, read)


def watershed_baseline(image: np.ndarray, min_distance: int = 5, min_size: int = 30) -> np.ndarray:
    """Instance labels (int32, 0 = background) of the classic nuclei pipeline, no learning:
    Gaussian smoothing (sigma 1), Otsu's threshold, holes filled, specks under ``min_size``
    pixels dropped, then a watershed on the negated smoothed (sigma 1) Euclidean distance to
    the background, within that mask, from one seed per local maximum of that distance, seeds at
    least ``min_distance`` px apart. The defaults were picked on the train split of the
    generated nuclei (radius 6-14 px; touching centres lie 9 px or more apart).

    Example:
        >>> yy, xx = np.mgrid[:40, :60]
        >>> image = np.where(np.minimum(np.hypot(yy - 20, xx - 20), np.hypot(yy - 20, xx - 38)) < 10, 5000, 300)
        >>> int(watershed_baseline(image.astype(np.uint16)).max())  # two touching discs
        2
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(np.asarray(image, np.float32), 1.0)
    mask = ndimage.binary_fill_holes(smooth >= otsu_threshold(smooth))
    parts = ndimage.label(mask)[0]
    mask &= (np.bincount(parts.ravel()) >= min_size)[parts]
    parts = ndimage.label(mask)[0]
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), 1.0)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=parts, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def watershed_scores(root: Path, split: str = "val") -> dict[str, Any]:
    """Scores of :func:`watershed_baseline` on ``root/split`` (a nuclei tree): the pixel IoUs of
    :func:`nuclei_scores` (the separated foreground of its labels against that of the true
    instances) and the object scores of :meth:`segkit.scoring.objects.ObjectMatch.scores`
    (precision, recall, f1, ap50, mean_ap and counts) pooled over the split's images.

    Example:
        >>> import tempfile
        >>> from segkit.benchmarks.userdata import write_nuclei_dataset
        >>> root = write_nuclei_dataset(Path(tempfile.mkdtemp()) / "n", train=0, val=1, size=(64, 64))
        >>> scores = watershed_scores(root)
        >>> scores["images"], 0 <= scores["ap50"] <= scores["f1"] <= 1
        (1, True)
    """
    import tifffile

    from segkit.scoring.objects import ObjectMatch, match_objects

    images = _nuclei_images(root, split)
    hist = np.zeros((2, 2), np.int64)
    match = ObjectMatch()
    for path in images:
        instances = tifffile.imread(path.parent.parent / "masks" / path.name)
        labels = watershed_baseline(tifffile.imread(path))
        truth, pred = separated_foreground(instances), separated_foreground(labels)
        hist += np.bincount(truth.ravel() * 2 + pred.ravel(), minlength=4).reshape(2, 2)
        match += match_objects(labels, instances)
    return {"images": len(images), **_pixel_ious(hist), **match.scores()}
