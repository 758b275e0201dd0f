"""The data set audit behind ``segkit-data``: a readable fingerprint of a data=folder tree.

:func:`scan_root` decodes every pair of every split with the preflight's checks (cached, in
threads, every bad file kept, not only the first); :func:`build_report` turns those facts into
plain data: counts, sizes, bit depths, intensity percentiles, class frequencies, the traps
users fall into (0/255 masks read as indices, instance ids read as classes, colour masks,
16-bit images, tiny images, missing or rare classes), and the settings to train with.

Example:
    >>> from segkit.data.files.preflight import PairFacts
    >>> facts = PairFacts(40, 60, 3, "uint8", [900, 1500], 0, [0, 1], 0, [0.0] * 3, [255.0] * 3)
    >>> results = [PairResult(split, Path(f"{split}.png"), Path(f"{split}m.png"), facts) for split in SPLITS[:2]]
    >>> report = build_report(results, MaskDecoder(), Path("/data"))
    >>> report["suggestions"]["data.num_classes"]["value"], report["suggestions"]["data.crop_size"]["value"]
    (2, 32)
    >>> report["suggestions"]["command"]
    'segkit-train data=folder data.root=/data data.num_classes=2 data.crop_size=32'
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.files.crops import auto_crop_size
from segkit.data.files.folder_index import SPLITS, check_root, find_pairs
from segkit.data.files.masks import MaskDecoder
from segkit.data.files.preflight import PairFacts, PreflightCache, collect_facts
from segkit.errors import shown

# More distinct values than this in one mask look like instance ids rather than classes.
MANY_VALUES = 20
# Most / least frequent (present) training class ratio from which the audit warns.
IMBALANCE = 50.0
WIDE_MASKS = ("uint16", "int16", "uint32", "int32", "uint64", "int64")


@dataclass
class PairResult:
    """One image/mask pair of a split: its preflight facts, or the one-line error that stopped it."""

    split: str
    image: Path
    mask: Path
    facts: PairFacts | None = None
    error: str | None = None


def scan_root(
    root: Path, decoder: MaskDecoder, in_channels: int | None = None,
    cache: PreflightCache | None = None, progress: bool = True,
) -> list[PairResult]:
    """Every pair of ``root``'s train, val and (if present) test splits, decoded and checked.

    Layout problems (no such folder, an unpaired file) raise a one-line ``SegkitError``; bad
    files (truncated, wrong size, bad mask values) are kept in the results' ``error``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     for split in ("train", "val"):
        ...         for sub in ("images", "masks"):
        ...             (Path(folder) / split / sub).mkdir(parents=True)
        ...         Image.new("RGB", (8, 6)).save(Path(folder) / split / "images" / "a.png")
        ...         Image.new("L", (8, 5)).save(Path(folder) / split / "masks" / "a.png")
        ...     results = scan_root(Path(folder), MaskDecoder(), progress=False)
        >>> [(r.split, r.facts, "its mask" in (r.error or "")) for r in results]
        [('train', None, True), ('val', None, True)]
    """
    check_root(root)
    results: list[PairResult] = []
    for split in SPLITS:
        if split == "test" and not (root / split).exists():
            continue
        pairs = find_pairs(root, split)
        # Any failure to decode is one bad pair to list, not the end of the audit.
        facts, errors = collect_facts(pairs, in_channels, decoder, cache, f"auditing {split}", progress,
                                      catch=(Exception,))
        results.extend(PairResult(split, image, mask, fact, errors.get(index))
                       for index, ((image, mask), fact) in enumerate(zip(pairs, facts)))
    return results


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"min", "median", "max"}`` of ``values``.

    Example:
        >>> spread([3, 1, 2, 10])
        {'min': 1, 'median': 2.5, 'max': 10}
    """
    def tidy(value: float) -> float:
        return int(value) if float(value).is_integer() else round(float(value), 4)

    return {"min": tidy(min(values)), "median": tidy(float(np.median(values))), "max": tidy(max(values))}


def split_summary(results: Sequence[PairResult], classes: int, mask_type: str) -> dict[str, Any]:
    """Counts, sizes, modes, intensity percentiles and class pixel frequencies of one split."""
    good = [r.facts for r in results if r.facts is not None]
    summary: dict[str, Any] = {"pairs": len(results), "bad": len(results) - len(good)}
    if not good:
        return summary
    pixels = np.zeros(classes, np.int64)
    for fact in good:
        pixels[: len(fact.class_counts)] += np.asarray(fact.class_counts, np.int64)[:classes]
    valid, ignored = int(pixels.sum()), sum(fact.ignored for fact in good)
    channels = max(fact.channels for fact in good)
    summary.update(
        height=spread([fact.height for fact in good]), width=spread([fact.width for fact in good]),
        channels=dict(Counter(str(fact.channels) for fact in good)),
        dtypes=dict(Counter(fact.dtype for fact in good)),
        mask_dtypes=dict(Counter(fact.mask_dtype or "unknown" for fact in good)),
        intensity=[{"channel": c, "low": spread([f.low[c] for f in good if f.channels > c]),
                    "high": spread([f.high[c] for f in good if f.channels > c])} for c in range(channels)],
        class_pixels=pixels.tolist(),
        class_fraction=[round(float(count) / valid, 6) if valid else 0.0 for count in pixels],
        absent_classes=[c for c in range(classes) if pixels[c] == 0],
        ignored_fraction=round(ignored / (valid + ignored), 6) if valid + ignored else 0.0,
    )
    if mask_type == "instances":
        summary["objects_per_image"] = {**spread([fact.instances for fact in good]),
                                        "total": sum(fact.instances for fact in good)}
    return summary


def _instance_cue(facts: Sequence[PairFacts], ignore_index: int) -> str | None:
    """Why index masks look like instance ids (``None``: they do not)."""
    ids = [fact.mask_values(ignore_index) - {0, ignore_index} for fact in facts]
    largest = max((max(values) for values in ids if values), default=0)
    most = max(len(values) for values in ids)
    wide = [fact.mask_dtype for fact in facts if fact.mask_dtype in WIDE_MASKS]
    sequential = sum(bool(values) and values == set(range(1, len(values) + 1)) for values in ids)
    if largest > 255:
        return f"mask values up to {largest}"
    if wide and (most > MANY_VALUES or len({frozenset(values) for values in ids}) > 1):
        return f"{wide[0]} masks whose values differ from image to image, up to {most} per mask"
    if most > MANY_VALUES and sequential >= 0.8 * len(ids):
        return f"up to {most} distinct values per mask, numbered 1..n in each"
    return None


def _warn(warnings: list[dict[str, str]], code: str, message: str) -> None:
    warnings.append({"code": code, "message": message})


def _traps(good: Sequence[PairFacts], results: Sequence[PairResult], decoder: MaskDecoder,
           warnings: list[dict[str, str]]) -> str:
    """Warn of masks that another ``mask_type`` reads right; the mask type to suggest."""
    colour = [r for r in results if r.error and decoder.mask_type != "colors" and "data.mask_type=colors" in r.error]
    if colour:
        _warn(warnings, "colour_masks", f"{len(colour)} of {len(results)} masks are RGB colours (e.g. "
              f"{shown(colour[0].mask)}) but are read as {decoder.mask_type}; use --mask-type colors (data.mask_type="
              "colors) with 'name R G B' lines in classes.txt, or save class indices")
        if 2 * len(colour) >= len(results):
            return "colors"
    if decoder.mask_type != "index" or not good:
        return decoder.mask_type
    values = set().union(*(fact.mask_values(decoder.ignore_index) for fact in good))
    if values <= {0, 255} and 255 in values:
        _warn(warnings, "binary_trap", "masks hold only 0 and 255: read as index, 255 is "
              + ("data.ignore_index and nothing of the object would be learnt" if decoder.ignore_index == 255
                 else "class 255") + "; use --mask-type binary (data.mask_type=binary: 0 background, non-zero "
              "object)")
        return "binary"
    cue = _instance_cue(good, decoder.ignore_index)
    if cue:
        _warn(warnings, "instance_ids", f"the masks look like instance ids, not classes: {cue}; if each value is "
              "one object, use --mask-type instances (data.mask_type=instances: background / object, touching "
              "objects kept apart)")
        return "instances"
    return "index"


def _image_warnings(good: Sequence[PairFacts], train: Sequence[PairFacts], crop: int | None,
                    warnings: list[dict[str, str]]) -> None:
    dtypes = Counter(fact.dtype for fact in good)
    deep = sorted(dtype for dtype in dtypes if dtype != "uint8")
    if deep:
        _warn(warnings, "bit_depth", f"images are {', '.join(deep)} ({sum(dtypes[d] for d in deep)} of "
              f"{len(good)}): each image is scaled by its own 1st/99.8th percentiles (data.intensity=auto, see "
              "data.intensity); for one fixed range, e.g. a 12-bit camera, set data.intensity=range "
              "data.value_range=[0,4095]")
    if len(dtypes) > 1:
        _warn(warnings, "mixed_dtypes", f"images mix bit depths ({', '.join(sorted(dtypes))}); check their source")
    channels = Counter(fact.channels for fact in good)
    if len(channels) > 1:
        _warn(warnings, "mixed_channels", f"images have {' and '.join(map(str, sorted(channels)))} channels; "
              "data.in_channels=3 reads grey as RGB and 1 reads RGB as grey, other counts must match")
    small = [fact for fact in train if crop is not None and min(fact.height, fact.width) < crop]
    if small:
        least = min(small, key=lambda fact: min(fact.height, fact.width))
        _warn(warnings, "small_images", f"{len(small)} of {len(train)} train images are smaller than the suggested "
              f"crop {crop} (smallest {least.width}x{least.height}, width x height): their crops are padded with "
              "ignore_index")


def _class_warnings(train: dict[str, Any], names: list[str], warnings: list[dict[str, str]]) -> list[float | None]:
    """Warn of absent and rare training classes; median-frequency class weights."""
    fractions = train.get("class_fraction", [])
    for c in train.get("absent_classes", []):
        _warn(warnings, "absent_from_train", f"{names[c]} is absent from train: the model cannot learn it; "
              "add training images that show it, or check num_classes")
    present = [f for f in fractions if f > 0]
    if len(present) >= 2 and max(present) / min(present) >= IMBALANCE:
        rare = names[fractions.index(min(present))]
        _warn(warnings, "imbalance", f"classes are strongly imbalanced: {rare} is {100 * min(present):.2g}% of "
              f"valid train pixels, the most frequent {100 * max(present):.3g}%; consider the class weights below")
    median = float(np.median(present)) if present else 0.0
    return [round(median / f, 4) if f > 0 else None for f in fractions]


def _num_classes(mask_type: str, decoder: MaskDecoder, good: Sequence[PairFacts],
                 class_names: list[str] | None) -> tuple[int | None, str]:
    if mask_type in ("binary", "instances"):
        return 2, f"mask_type {mask_type}: background and object"
    if mask_type == "colors":
        return decoder.classes or (len(class_names) if class_names else None), "one class per palette colour"
    if decoder.num_classes is not None:
        return decoder.num_classes, "as given"
    ignore = decoder.ignore_index
    top = max((max(fact.mask_values(ignore) - {ignore}, default=0) for fact in good), default=0)
    return max(2, top + 1), f"largest class value {top} + 1, ignore_index {ignore} excluded"


def _in_channels(train: Sequence[PairFacts]) -> int:
    """The train images' most common channel count (an 8-bit alpha channel dropped; a last
    channel not marked as alpha, as RGB + near-infrared, is data and counts)."""
    counts = Counter(fact.channels for fact in train)
    channels = max(counts, key=lambda c: (counts[c], c)) if counts else 3
    alpha = all(fact.dtype == "uint8" and fact.alpha for fact in train if fact.channels == channels)
    return channels - 1 if channels in (2, 4) and alpha else channels


def _quoted_override(key: str, value: object) -> str:
    text = str(value)
    if any(char in text for char in " ,=[]{}()'\"\\$"):
        text = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return shlex.quote(f"{key}={text}")


def _file_entry(result: PairResult) -> dict[str, Any]:
    fact = asdict(result.facts)  # type: ignore[arg-type]
    fact["class_pixels"] = {str(c): n for c, n in enumerate(fact.pop("class_counts")) if n}
    return {"split": result.split, "image": str(result.image), "mask": str(result.mask), **fact}


def build_report(
    results: Sequence[PairResult], decoder: MaskDecoder, root: Path,
    in_channels: int | None = None, class_names: list[str] | None = None,
) -> dict[str, Any]:
    """The audit of ``results`` (:func:`scan_root`) as JSON-ready data (see the module example)."""
    good = [r.facts for r in results if r.facts is not None]
    train = [r.facts for r in results if r.split == "train" and r.facts is not None]
    classes = decoder.classes or max((len(fact.class_counts) for fact in good), default=0)
    splits = {split: split_summary([r for r in results if r.split == split], classes, decoder.mask_type)
              for split in SPLITS if any(r.split == split for r in results)}
    warnings: list[dict[str, str]] = []
    mask_type = _traps(good, results, decoder, warnings)
    crop = auto_crop_size([(fact.height, fact.width) for fact in train]) if train else None
    _image_warnings(good, train, crop, warnings)
    num_classes, why = _num_classes(mask_type, decoder, good, class_names)
    names = [f"class {c} ({class_names[c]})" if class_names and c < len(class_names) else f"class {c}"
             for c in range(classes)]
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        _warn(warnings, "class_names", f"classes.txt names {len(class_names)} classes but the masks suggest "
              f"{num_classes}; fix one of them (training stops on the difference)")
    # Class statistics hold for the mask type they were read as, not for a suggested other one.
    weights = _class_warnings(splits.get("train", {}), names, warnings) if mask_type == decoder.mask_type else None
    for split, summary in splits.items() if weights is not None else ():
        for c in summary.get("absent_classes", []) if split != "train" else []:
            summary.setdefault("absent_notes", []).append(f"{names[c]} absent from {split}")
    channels = in_channels or _in_channels(train)
    suggestions: dict[str, Any] = {
        "data.num_classes": {"value": num_classes, "why": why},
        "data.mask_type": {"value": mask_type, "why": "as read" if mask_type == decoder.mask_type else "warnings"},
        "data.crop_size": {"value": crop, "why": "auto_crop_size of the train sizes: 25th percentile of short sides"},
        "data.in_channels": {"value": channels, "why": "as given" if in_channels else "the train images' channels"},
        "model.loss.class_weights": {"value": weights, "why": "median frequency balancing on train: median(freq) / freq"
                          if weights is not None else f"re-run with --mask-type {mask_type} for class statistics"},
    }
    command = ["segkit-train", "data=folder", _quoted_override("data.root", root)]
    command += [f"data.num_classes={num_classes}"] if num_classes is not None else []
    command += [f"data.mask_type={mask_type}"] if mask_type != "index" else []
    command += [f"data.in_channels={channels}"] if channels != 3 else []
    command += [f"data.ignore_index={decoder.ignore_index}"] if decoder.ignore_index != 255 else []
    suggestions["command"] = " ".join(command + ([f"data.crop_size={crop}"] if crop is not None else []))
    return {
        "root": str(root),
        "read_as": {"mask_type": decoder.mask_type, "num_classes": decoder.num_classes,
                    "in_channels": in_channels, "ignore_index": decoder.ignore_index},
        "class_names": names, "splits": splits, "warnings": warnings, "suggestions": suggestions,
        "errors": [{"split": r.split, "image": str(r.image), "mask": str(r.mask), "error": r.error}
                   for r in results if r.error],
        "files": [_file_entry(r) for r in results if r.facts is not None],
    }
