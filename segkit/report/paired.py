"""Is B better than A on the same images? A paired bootstrap over images of the mIoU difference.

Input: two ``segkit-eval`` results of the same split, each a ``per_image_confusion.npz`` with
``confusion`` (N images, K, K; rows truth, columns prediction) and ``files`` (N names, the same
in both, in the same order). Each resample draws N image indices with replacement, sums those
images' matrices for A and for B, and takes ``mIoU(B) - mIoU(A)`` (mIoU: mean IoU over the
classes with a non-empty union, as segkit scores a split). Resamples are vectorised in chunks:
the draw counts ``(R, N)`` times the stacked matrices ``(N, 2 K^2)``.

Example:
    >>> a = np.array([[[3, 1], [0, 4]], [[2, 0], [1, 1]]])   # 2 images, 2 classes
    >>> b = np.array([[[4, 0], [0, 4]], [[2, 0], [0, 2]]])   # B is right on every pixel
    >>> # A sums to [[5, 1], [1, 5]]: IoU 5/7 for both classes
    >>> result = paired_bootstrap(a, b, resamples=200, seed=0)
    >>> round(result.miou_a, 4), result.miou_b, result.low > 0, result.fraction_not_better
    (0.7143, 1.0, True, 0.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import SegkitError
from segkit.training.run_dir import PER_IMAGE_NPZ, RECORD_NAME, RunDirectory

# Draw counts held at once: resamples per chunk x images (float64, 8 bytes each).
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class EvalResult:
    """One ``segkit-eval`` result: per-image confusion matrices and the image names."""

    path: Path
    confusion: np.ndarray
    files: list[str]
    class_names: list[str] | None


def find_confusion(path: Path | str) -> Path:
    """The ``per_image_confusion.npz`` that ``path`` means: the file itself, ``<path>/`` + it,
    or the only ``<path>/eval*/`` + it (a run directory holding one evaluation)."""
    path = Path(path)
    if path.is_file():
        return path
    run = RunDirectory(path)
    if run.per_image_confusion.is_file():
        return run.per_image_confusion
    found = run.evaluations() if path.is_dir() else []
    if len(found) == 1:
        return found[0].per_image_confusion
    if found:
        raise SegkitError(f"{path}: several evaluations ({', '.join(str(e.path) for e in found)}); pass one of them")
    raise SegkitError(f"{path}: no {PER_IMAGE_NPZ} in it or in its eval*/ directories (a segkit-eval output directory holds one)")


def load_confusion(path: Path | str) -> EvalResult:
    """Read and check a ``per_image_confusion.npz`` (found by :func:`find_confusion`)."""
    npz = find_confusion(path)
    try:
        with np.load(npz, allow_pickle=False) as data:
            confusion, files = np.asarray(data["confusion"]), [str(f) for f in data["files"]]
    except (OSError, KeyError, ValueError) as error:
        raise SegkitError(f"{npz}: not a per-image confusion file with 'confusion' and 'files' ({error})") from None
    if confusion.ndim != 3 or confusion.shape[1] != confusion.shape[2] or confusion.shape[0] != len(files):
        raise SegkitError(f"{npz}: 'confusion' has shape {confusion.shape}; expected (N, K, K) with N = {len(files)} files")
    if not len(files):
        raise SegkitError(f"{npz}: holds no images")
    class_names = None
    run = RunDirectory(npz.parent)
    if run.record_path.is_file():
        try:
            names = run.read_record().get("class_names")
        except (OSError, ValueError, AttributeError) as error:
            raise SegkitError(f"{run.record_path}: unreadable {RECORD_NAME} ({error})") from None
        class_names = [str(n) for n in names] if isinstance(names, list) else None
    return EvalResult(npz, confusion, files, class_names)


def check_paired(a: EvalResult, b: EvalResult) -> None:
    """Raise a one-line :class:`SegkitError` unless A and B scored the same images and classes."""
    if a.files != b.files:
        if len(a.files) != len(b.files):
            detail = f"A has {len(a.files)} images, B has {len(b.files)}"
        else:
            i = next(i for i, (x, y) in enumerate(zip(a.files, b.files)) if x != y)
            detail = f"image {i} is {a.files[i]!r} in A but {b.files[i]!r} in B"
        raise SegkitError(f"A and B were not evaluated on the same images in the same order: {detail}")
    if a.confusion.shape != b.confusion.shape:
        raise SegkitError(f"A and B have different class counts: {a.confusion.shape[1]} vs {b.confusion.shape[1]}")
    if a.class_names and b.class_names and a.class_names != b.class_names:
        raise SegkitError(f"A and B have different classes: {a.class_names} vs {b.class_names}")


def miou(confusion: np.ndarray) -> np.ndarray:
    """mIoU of confusion matrices ``(..., K, K)``: mean IoU over classes with a non-empty union.

    Example:
        >>> float(miou(np.array([[3, 1], [0, 4]]))), float(miou(np.array([[2, 0], [0, 0]])))
        (0.775, 1.0)
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    diag = np.diagonal(confusion, axis1=-2, axis2=-1)
    union = confusion.sum(axis=-1) + confusion.sum(axis=-2) - diag
    present = union > 0
    iou = np.where(present, diag / np.where(present, union, 1.0), 0.0)
    count = present.sum(axis=-1)
    return np.where(count > 0, iou.sum(axis=-1) / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class PairedResult:
    """Observed mIoUs and difference B - A, its percentile interval, P(difference <= 0)."""

    n_images: int
    n_classes: int
    resamples: int
    seed: int
    confidence: float
    miou_a: float
    miou_b: float
    difference: float
    low: float
    high: float
    fraction_not_better: float

    def as_dict(self, a: str = "A", b: str = "B") -> dict[str, Any]:
        """``paired.json``'s content."""
        return {"a": a, "b": b, **asdict(self)}

    def summary(self) -> str:
        """One line: the difference, its interval and the fraction of resamples where B is not better."""
        level = f"{self.confidence:.0%}"
        return (f"mIoU B - A = {self.difference:+.4f} ({level} interval [{self.low:+.4f}, {self.high:+.4f}]; "
                f"A {self.miou_a:.4f}, B {self.miou_b:.4f}); difference <= 0 in {self.fraction_not_better:.4f} "
                f"of {self.resamples} resamples over {self.n_images} images")

    def markdown(self, a: str = "A", b: str = "B") -> str:
        """``paired.md``."""
        level = f"{self.confidence:.0%}"
        return "\n".join([
            "# segkit paired comparison", "",
            f"- A: `{a}`", f"- B: `{b}`", "",
            "| mIoU A | mIoU B | B - A | " + level + " interval | fraction B - A <= 0 |",
            "|---|---|---|---|---|",
            (f"| {self.miou_a:.4f} | {self.miou_b:.4f} | {self.difference:+.4f} | "
             f"[{self.low:+.4f}, {self.high:+.4f}] | {self.fraction_not_better:.4f} |"), "",
            (f"Paired bootstrap over the {self.n_images} images ({self.n_classes} classes): {self.resamples} "
             f"resamples of the images with replacement (seed {self.seed}), each scoring A and B on the same "
             "resample; the interval is the percentile interval of B - A. An interval above 0 means B is "
             "better on this split beyond what the choice of images explains."), "",
        ])


def paired_bootstrap(confusion_a: np.ndarray, confusion_b: np.ndarray, resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> PairedResult:
    """Bootstrap the mIoU difference B - A over images (arrays ``(N, K, K)``, the same images)."""
    a, b = np.asarray(confusion_a), np.asarray(confusion_b)
    if a.shape != b.shape or a.ndim != 3:
        raise SegkitError(f"confusion arrays must both be (N, K, K); got {a.shape} and {b.shape}")
    if resamples < 1 or not 0 < confidence < 1:
        raise SegkitError(f"resamples={resamples}, confidence={confidence}: need resamples >= 1 and 0 < confidence < 1")
    n, k = a.shape[0], a.shape[1]
    stacked = np.concatenate([a.reshape(n, -1), b.reshape(n, -1)], axis=1).astype(np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_ELEMENTS // n))
    differences = np.empty(resamples)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        sums = (counts @ stacked).reshape(size, 2, k, k)  # exact: integer counts below 2**53
        scores = miou(sums)
        differences[start:start + size] = scores[:, 1] - scores[:, 0]
    observed_a, observed_b = float(miou(a.sum(axis=0))), float(miou(b.sum(axis=0)))
    finite = differences[np.isfinite(differences)]
    tail = (1 - confidence) / 2
    low, high = (np.quantile(finite, [tail, 1 - tail]) if finite.size else (np.nan, np.nan))
    return PairedResult(
        n_images=n, n_classes=k, resamples=resamples, seed=seed, confidence=confidence,
        miou_a=observed_a, miou_b=observed_b, difference=observed_b - observed_a,
        low=float(low), high=float(high),
        fraction_not_better=float(np.mean(finite <= 0)) if finite.size else float("nan"),
    )
