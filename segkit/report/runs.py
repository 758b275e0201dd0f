"""Find finished runs (each a directory with ``metrics.json``) and what was swept between them.

A PATH is a run directory (``segkit-train``'s, or ``segkit-eval``'s output directory: both write
one record schema, :mod:`segkit.training.run_record`), a ``metrics.json`` file, or a directory
of runs: a Hydra multirun directory (numbered job directories ``0/``, ``1/``, ...) or e.g.
``logs/train/runs/``. A job or run directory without a readable ``metrics.json`` (unfinished,
failed, older segkit) is *skipped*, with the reason.

Example:
    >>> import json, tempfile
    >>> sweep = Path(tempfile.mkdtemp())
    >>> for job, width in enumerate([8, 16]):
    ...     (sweep / str(job)).mkdir()
    ...     record = {"overrides": [f"model.base_width={width}", "seed=1"], "val": {"mIoU": 0.5}}
    ...     _ = (sweep / str(job) / "metrics.json").write_text(json.dumps(record))
    >>> (sweep / "2").mkdir()  # a job that never finished
    >>> runs, skipped = find_runs([sweep])
    >>> [run.path.name for run in runs], swept_keys(runs), [s.reason for s in skipped]
    (['0', '1'], ['model.base_width'], ['no metrics.json (unfinished or failed run?)'])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.training.run_dir import RECORD_NAME, RunDirectory

# Override keys that repeat a configuration: seeds re-draw a run, folds re-split its data
# (k-fold cross-validation, segkit.data.folds). Runs differing only in these form one configuration.
RESEED_KEYS = ("seed", "data.seed")
FOLD_KEYS = ("data.fold", "data.base.fold")
REPEAT_KEYS = RESEED_KEYS + FOLD_KEYS

Settings = tuple[tuple[str, "str | None"], ...]


@dataclass(frozen=True)
class Run:
    """One finished run: its directory, its ``metrics.json`` and its overrides by key."""

    path: Path
    record: dict[str, Any]
    overrides: dict[str, str]

    def get(self, name: str) -> Any:
        """The value of ``name`` (``/``-separated, e.g. ``val/mIoU``) in the record, or None."""
        return lookup(self.record, name)


@dataclass(frozen=True)
class Skipped:
    """A PATH, job or run directory that holds no usable ``metrics.json``, and why."""

    path: Path
    reason: str


@dataclass
class Config:
    """Runs that differ only in their seeds and folds (:data:`REPEAT_KEYS`)."""

    settings: Settings
    runs: list[Run] = field(default_factory=list)

    @property
    def repeats(self) -> str:
        """How many runs the configuration averages: ``3 folds × 2 seeds``, ``3 seeds``, ``1 run``;
        ``5 runs (3 folds, 2 seeds)`` when they are not every fold with every seed.

        Example:
            >>> runs = [Run(Path(f"{f}{s}"), {}, {"data.fold": f, "seed": s}) for f in "012" for s in "12"]
            >>> Config((), runs).repeats, Config((), runs[:5]).repeats, Config((), runs[:1]).repeats
            ('3 folds × 2 seeds', '5 runs (3 folds, 2 seeds)', '1 run')
        """
        counts = [(len({tuple(run.overrides.get(key) for key in keys) for run in self.runs}), what)
                  for keys, what in ((FOLD_KEYS, "fold"), (RESEED_KEYS, "seed"))]
        varied = [f"{count} {what}s" for count, what in counts if count > 1]
        if not varied or math.prod(count for count, _ in counts) != len(self.runs):
            runs = f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"
            return f"{runs} ({', '.join(varied)})" if varied else runs
        return " × ".join(varied)

    @property
    def label(self) -> str:
        """``key=value`` of each swept setting (``all runs`` when nothing but seeds and folds was
        swept), then :attr:`repeats` when it averages several runs.

        Example:
            >>> Config((("model", "fcn8s"), ("lr", None))).label
            'model=fcn8s lr=-'
        """
        settings = " ".join(f"{key}={'-' if value is None else value}" for key, value in self.settings) or "all runs"
        return f"{settings} ({self.repeats})" if len(self.runs) > 1 else settings


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """Hydra overrides by key; ``+``/``++`` prefixes dropped, a deletion ``~key`` has value ``~``.

    Example:
        >>> parse_overrides(["model.base_width=8", "++trainer.max_time=00:00:05:00", "~logger"])
        {'model.base_width': '8', 'trainer.max_time': '00:00:05:00', 'logger': '~'}
    """
    parsed: dict[str, str] = {}
    for override in overrides:
        key, sep, value = str(override).partition("=")
        if key.startswith("~"):
            parsed[key[1:]] = value if sep else "~"
        else:
            parsed[key.lstrip("+")] = value
    return parsed


def lookup(record: dict[str, Any], name: str) -> Any:
    """``record["val"]["IoU"]["a"]`` for ``val/IoU/a``; None where any part is missing.

    Example:
        >>> lookup({"val": {"mIoU": 0.5}}, "val/mIoU"), lookup({"val": {}}, "test/mIoU")
        (0.5, None)
    """
    node: Any = record
    for part in name.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _overrides_of(run_dir: RunDirectory, record: dict[str, Any]) -> list[str]:
    if isinstance(record.get("overrides"), list):
        return record["overrides"]
    saved = run_dir.overrides_path  # records written before "overrides" existed
    if saved.is_file():
        import yaml  # PyYAML, installed with omegaconf

        loaded = yaml.safe_load(saved.read_text())
        return [str(item) for item in loaded] if isinstance(loaded, list) else []
    return []


def read_run(run_dir: Path) -> Run | Skipped:
    """The run in ``run_dir`` (or a ``metrics.json`` path), or why it cannot be read."""
    run_dir = Path(run_dir)
    if run_dir.name == RECORD_NAME and run_dir.is_file():
        run_dir = run_dir.parent
    run = RunDirectory(run_dir)
    if not run.record_path.is_file():
        return Skipped(run_dir, f"no {RECORD_NAME} (unfinished or failed run?)")
    try:
        record = run.read_record()
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return Skipped(run_dir, f"unreadable {RECORD_NAME}: {error}")
    if not isinstance(record, dict):
        return Skipped(run_dir, f"{RECORD_NAME} holds no JSON object")
    return Run(run_dir.resolve(), record, parse_overrides(_overrides_of(run, record)))


def _children(container: Path) -> list[Path]:
    """Job directories (numbered, in number order), then other subdirectories that look like runs."""
    subdirs = [p for p in container.iterdir() if p.is_dir() and not p.name.startswith(".")]
    jobs = sorted((p for p in subdirs if p.name.isdigit()), key=lambda p: int(p.name))
    runs = sorted(p for p in subdirs if not p.name.isdigit() and RunDirectory(p).is_run())
    return jobs + runs


def find_runs(paths: Sequence[Path | str]) -> tuple[list[Run], list[Skipped]]:
    """The runs under ``paths`` in the order given (jobs by number), each once, and the skipped."""
    runs: list[Run] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for given in map(Path, paths):
        if not given.exists():
            skipped.append(Skipped(given, "does not exist"))
            continue
        if given.is_file() or RunDirectory(given).is_run():
            candidates = [given]  # one run (.hydra/: a run directory, finished or not)
        else:
            candidates = _children(given)
            if not candidates:
                skipped.append(Skipped(given, f"no {RECORD_NAME} and no numbered job or run directories in it"))
                continue
        for candidate in candidates:
            found = read_run(candidate)
            if isinstance(found, Run):
                if found.path not in seen:
                    seen.add(found.path)
                    runs.append(found)
            else:
                skipped.append(found)
    return runs, skipped


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose values differ between ``runs`` (absent counts as a value), in first-seen order.

    Example:
        >>> a = Run(Path("a"), {}, {"model": "unet", "seed": "1", "lr": "0.1"})
        >>> b = Run(Path("b"), {}, {"model": "unet", "seed": "2"})
        >>> swept_keys([a, b])
        ['seed', 'lr']
    """
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def group_configs(runs: Sequence[Run], swept: Sequence[str]) -> list[Config]:
    """Runs grouped by their swept settings other than seeds and folds, configurations in first-seen order.

    Example:
        >>> runs = [Run(Path(str(i)), {}, {"w": w, "seed": s}) for i, (w, s) in enumerate(["81", "82", "41"])]
        >>> [(c.label, len(c.runs)) for c in group_configs(runs, ["w", "seed"])]
        [('w=8 (2 seeds)', 2), ('w=4', 1)]
    """
    keys = [key for key in swept if key not in REPEAT_KEYS]
    configs: dict[Settings, Config] = {}
    for run in runs:
        settings = tuple((key, run.overrides.get(key)) for key in keys)
        configs.setdefault(settings, Config(settings)).runs.append(run)
    return list(configs.values())
