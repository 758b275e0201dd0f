"""The full preflight: decode and check every image/mask pair before training starts.

A bad file found at step 40,000 costs hours; found here, it costs seconds. Every pair of the
training and validation splits is decoded (truncated files, modes, sizes, channels, mask
values), in parallel threads (the decoders release the GIL), with a progress bar, and the
facts of each good pair (size, dtype, class pixel counts, intensity percentiles) are cached by
path + size + mtime, so a second run over the same files is instant. ``segkit-data`` reads the
same facts for its audit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from segkit.atomic import atomic_path
from segkit.data.files.masks import MaskDecoder, raw_values
from segkit.data.files.readers import match_channels, read_pixels
from segkit.errors import shown
from segkit.errors import SegkitError

Pair = tuple[Path, Path]
# Bump when PairFacts or the checks change: older cache files are then ignored.
CACHE_VERSION = 3


@dataclass
class PairFacts:
    """What the preflight learnt about one good pair (JSON-serialisable)."""

    height: int
    width: int
    channels: int
    dtype: str
    class_counts: list[int]
    ignored: int
    raw_values: list[int]
    instances: int
    low: list[float]
    high: list[float]
    mask_dtype: str = ""
    alpha: bool = False  # the image's last channel is alpha (as read, after data.in_channels)

    def mask_values(self, ignore_index: int) -> set[int]:
        """The class values the decoded mask holds (``ignore_index`` included when present)."""
        values = {value for value, count in enumerate(self.class_counts) if count}
        return values | {ignore_index} if self.ignored else values


def decode_pair(
    pair: Pair, in_channels: int | None, decoder: MaskDecoder
) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray | None, np.ndarray]:
    """``(image (H, W, C) own dtype, its last channel is alpha, classes (H, W) int64, instances
    or None, raw mask)``, with every check."""
    image_path, mask_path = pair
    image, alpha = read_pixels(image_path)
    raw, _ = read_pixels(mask_path, palette_as_indices=decoder.mask_type != "colors", check_finite=False)
    if image.shape[:2] != raw.shape[:2]:
        (ih, iw), (mh, mw) = image.shape[:2], raw.shape[:2]
        raise SegkitError(
            f"{shown(image_path)} is {iw}x{ih} (width x height) but its mask {shown(mask_path)} is {mw}x{mh}; "
            "resize the mask to its image's size (nearest-neighbour) or fix the pair"
        )
    if in_channels is not None:
        matched = match_channels(image, in_channels, image_path, alpha)
        image, alpha = matched, alpha and matched.shape[-1] == image.shape[-1]
    classes, instances = decoder(raw, mask_path)
    return image, alpha, classes, instances, raw


def load_pair(
    pair: Pair, in_channels: int | None, decoder: MaskDecoder
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """``(image (H, W, C) own dtype, classes (H, W) int64, instances or None, raw mask)``."""
    image, _, classes, instances, raw = decode_pair(pair, in_channels, decoder)
    return image, classes, instances, raw


def pair_facts(pair: Pair, in_channels: int | None, decoder: MaskDecoder) -> PairFacts:
    """Decode ``pair`` with every check and summarise it."""
    image, alpha, classes, instances, raw = decode_pair(pair, in_channels, decoder)
    ignored = classes == decoder.ignore_index
    counts = np.bincount(classes[~ignored].ravel(), minlength=decoder.classes or 0)
    flat = image.reshape(-1, image.shape[-1])[:: max(1, image.shape[0] * image.shape[1] // 1_000_000)]
    low, high = np.percentile(flat, (1.0, 99.8), axis=0)
    return PairFacts(
        height=int(image.shape[0]), width=int(image.shape[1]), channels=int(image.shape[2]), dtype=str(image.dtype),
        class_counts=counts.astype(int).tolist(), ignored=int(ignored.sum()), raw_values=raw_values(raw),
        instances=0 if instances is None else len(np.unique(instances[instances > 0])),
        low=[float(v) for v in low], high=[float(v) for v in high], mask_dtype=str(raw.dtype), alpha=alpha,
    )


def cache_dir() -> Path:
    """``$SEGKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/segkit``, else ``~/.cache/segkit``."""
    if os.environ.get("SEGKIT_CACHE_DIR"):
        return Path(os.environ["SEGKIT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segkit"


def _signature(pair: Pair) -> list[int]:
    stats = [path.stat() for path in pair]
    return [value for stat in stats for value in (stat.st_size, stat.st_mtime_ns)]


class PreflightCache:
    """Facts of pairs already checked under the same settings, keyed by path, size and mtime."""

    def __init__(self, settings: dict[str, Any], folder: Path | None = None) -> None:
        key = json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True, default=str)
        self.path = (folder or cache_dir()) / f"preflight-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
        try:
            self.entries: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def get(self, pair: Pair) -> PairFacts | None:
        entry = self.entries.get(f"{pair[0]}|{pair[1]}")
        if entry is None or entry["signature"] != _signature(pair):
            return None
        return PairFacts(**entry["facts"])

    def put(self, pair: Pair, facts: PairFacts) -> None:
        self.entries[f"{pair[0]}|{pair[1]}"] = {"signature": _signature(pair), "facts": asdict(facts)}
        self.changed = True

    def save(self) -> None:
        """Write atomically; a cache that cannot be written only costs the next run time."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as partial:
                partial.write_text(json.dumps(self.entries))
        except OSError:
            pass


def collect_facts(
    pairs: Sequence[Pair],
    in_channels: int | None,
    decoder: MaskDecoder,
    cache: PreflightCache | None = None,
    description: str = "checking",
    progress: bool = True,
    workers: int | None = None,
    catch: tuple[type[Exception], ...] = (SegkitError,),
) -> tuple[list[PairFacts | None], dict[int, str]]:
    """``(facts or None per pair, {pair index: one-line error})``: every pair checked, however
    many are bad (the audit lists them all); good pairs are cached. ``catch``: the errors kept
    as a pair's error (others propagate); one not a SegkitError is kept with both paths."""
    facts: list[PairFacts | None] = [cache.get(pair) if cache else None for pair in pairs]
    todo = [index for index, found in enumerate(facts) if found is None]
    errors: dict[int, str] = {}
    workers = workers or min(8, os.cpu_count() or 1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress or not todo, transient=True) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task(f"{description} {len(todo)} pairs", total=len(todo))

        def check(index: int) -> None:
            try:
                facts[index] = pair_facts(pairs[index], in_channels, decoder)
            except catch as error:
                errors[index] = str(error) if isinstance(error, SegkitError) else " ".join(
                    f"{shown(pairs[index][0])} / {shown(pairs[index][1])}: {type(error).__name__} {error}".split())
            finally:
                bar.advance(task)

        list(pool.map(check, todo))
    if cache is not None:
        for index in todo:
            if index not in errors:
                cache.put(pairs[index], facts[index])  # type: ignore[arg-type]
        cache.save()
    return facts, errors


def scan_pairs(
    pairs: Sequence[Pair], in_channels: int | None, decoder: MaskDecoder, audit: str = "segkit-data ROOT",
    **options: Any,
) -> list[PairFacts]:
    """Facts of every pair (cached ones from ``cache``), or the first bad file's error;
    ``options`` are :func:`collect_facts`'s (``cache``, ``description``, ``progress``, ``workers``).

    Errors are reported in file order (the same error whichever thread finds it first), with
    the number of other bad pairs and ``audit``, the ``segkit-data`` command that lists them
    all (with the same settings), so one run tells how much is wrong.
    """
    facts, errors = collect_facts(pairs, in_channels, decoder, **options)
    if errors:
        first = min(errors)
        others = f" (and {len(errors) - 1} more bad pair(s); `{audit}` lists them all)" if len(errors) > 1 else ""
        raise SegkitError(errors[first] + others)
    return facts  # type: ignore[return-value]


def check_binary_trap(pairs: Sequence[Pair], facts: Sequence[PairFacts], decoder: MaskDecoder) -> None:
    """Stop ``index`` masks holding only {0, 255} with 2 classes: they would train on
    background alone, 255 being the ignore index (mmseg #2592, Pytorch-UNet #341)."""
    if decoder.mask_type != "index" or decoder.num_classes != 2 or decoder.ignore_index != 255:
        return
    values = {value for fact in facts for value in fact.raw_values}
    if values and values <= {0, 255} and 255 in values:
        example = next(pair[1] for pair, fact in zip(pairs, facts) if 255 in fact.raw_values)
        raise SegkitError(
            f"{shown(example)}: masks hold only 0 and 255, and with data.mask_type=index 255 is ignored, so "
            "nothing would be learnt of the object class; set data.mask_type=binary (0 background, "
            "non-zero object)"
        )
