"""A sweep's Optuna study in ``segkit-report``: ``study_trials.csv``, a section of ``report.md``
and ``study_progress.png`` (drawn by :func:`segkit.report.figures.study_progress`).

The study is found by :func:`segkit.sweeps.storage.find_study_storage` (``optuna.journal``, a
legacy ``optuna.db``, or the storage ``multirun.yaml`` names) under ``hydra.sweeper.study_name``.
Optuna is imported only when a sweep has a study, so plain sweeps need no ``segkit[sweep]``.
A trial's compute is its ``segkit:seconds`` system attribute (the worker seconds spent on it, all
runs of a continued trial together), else its completion minus its start time.

Example (the best value so far against the compute spent, failed trials never best):
    >>> from datetime import datetime, timedelta
    >>> at = lambda s: datetime(2025, 1, 1) + timedelta(seconds=s)
    >>> trials = [TrialInfo(0, "COMPLETE", (0.5,), seconds=10.0, complete=at(10)),
    ...           TrialInfo(1, "FAIL", None, seconds=5.0, complete=at(12)),
    ...           TrialInfo(2, "PRUNED", None, seconds=3.0, complete=at(11))]
    >>> [(p.compute, p.best, p.trial.state) for p in best_so_far(trials, "maximize")]
    [(10.0, 0.5, 'COMPLETE'), (13.0, 0.5, 'PRUNED'), (18.0, 0.5, 'FAIL')]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from segkit.errors import SegkitError, shown
from segkit.report.tables import cell, markdown_table, write_csv
from segkit.sweeps.ownership import SECONDS  # ownership.py imports no optuna

TRIALS_CSV = "study_trials.csv"
PROGRESS_FIGURE = "study_progress.png"
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
DEFAULT_STUDY_NAME = "segkit"
# segkit.sweeps.storage's JOURNAL_NAME and LEGACY_SQLITE_NAME, for when it cannot be imported.
_STUDY_FILES = ("optuna.journal", "optuna.db")


class OptunaMissing(SegkitError):
    """The sweep has a study but optuna is not installed: its section is skipped, not an error."""


@dataclass(frozen=True)
class TrialInfo:
    """One trial, as plain values: ``values`` is None unless COMPLETE; ``intermediate`` step -> value."""

    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    start: datetime | None = None
    complete: datetime | None = None
    job_dir: Path | None = None

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values and len(self.values) == 1 else None


@dataclass(frozen=True)
class StudyInfo:
    """A study read from its storage: name, where it is, its directions and trials by number."""

    name: str
    storage: str
    directions: tuple[str, ...]
    trials: list[TrialInfo]

    @property
    def best(self) -> TrialInfo | None:
        """The best COMPLETE trial (lowest number among equals); None for a multi-objective study."""
        if len(self.directions) != 1:
            return None
        done = [t for t in self.trials if t.state == "COMPLETE" and _finite(t.value)]
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        return max(done, key=lambda t: (sign * t.value, -t.number), default=None)  # type: ignore[operator]


@dataclass(frozen=True)
class Point:
    """A point of the progress curve: compute spent up to and including ``trial``, the best value then."""

    compute: float
    best: float | None
    trial: TrialInfo


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _study_name(sweep_dir: Path) -> str:
    import yaml  # PyYAML, installed with omegaconf

    multirun = sweep_dir / "multirun.yaml"
    try:
        loaded = yaml.safe_load(multirun.read_text()) if multirun.is_file() else None
    except (OSError, yaml.YAMLError) as error:
        raise SegkitError(f"cannot read {shown(multirun)}: {type(error).__name__}") from error
    hydra = loaded.get("hydra") if isinstance(loaded, dict) else None
    sweeper = hydra.get("sweeper") if isinstance(hydra, dict) else None
    return str((sweeper.get("study_name") if isinstance(sweeper, dict) else None) or DEFAULT_STUDY_NAME)


def find_storage(sweep_dir: Path) -> str | None:
    """The storage (path or URL) of the study of the sweep in ``sweep_dir``, None without one.

    Example:
        >>> import tempfile
        >>> find_storage(Path(tempfile.mkdtemp())) is None
        True
    """
    try:
        from segkit.sweeps.storage import find_study_storage
    except ImportError as error:  # no optuna: fine for a plain sweep
        if any((sweep_dir / name).is_file() for name in _STUDY_FILES):
            raise OptunaMissing(f"its Optuna study needs optuna: pip install 'segkit[sweep]' ({error})") from error
        return None
    _study_name(sweep_dir)  # a broken multirun.yaml is one line, not a traceback
    return find_study_storage(sweep_dir)


def _storage_file(url: str, sweep_dir: Path) -> Path | None:
    """The file behind a journal path or ``sqlite:///`` URL (relative: to the sweep directory when
    not found from here); None for a server URL."""
    if "://" in url and not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path if path.is_absolute() or path.exists() else sweep_dir / path


def read_study(sweep_dir: Path, url: str) -> StudyInfo:
    """Load the study of the sweep in ``sweep_dir`` from ``url`` (read only); SegkitError naming
    the storage when it is missing or unreadable. Example: ``tests/test_report_study.py``."""
    import optuna

    from segkit.sweeps.storage import open_storage, open_study

    file = _storage_file(url, sweep_dir)
    if file is not None:
        if not file.is_file():  # opening would create an empty journal or database
            raise SegkitError(f"the Optuna study of {shown(sweep_dir)} is stored in {shown(file)}, which does not exist")
        url = f"sqlite:///{file}" if url.startswith("sqlite:///") else str(file)
    where = shown(file.resolve() if file is not None else re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url))  # no password
    name = _study_name(sweep_dir)
    try:
        try:
            study = open_study(name, url)
        except KeyError:  # no study of that name: take the only one there is
            names = optuna.get_all_study_names(open_storage(url))
            if len(names) != 1:
                raise SegkitError(f"{where} holds no Optuna study {name!r} (hydra.sweeper.study_name); "
                                  f"it holds {', '.join(map(repr, names)) or 'none'}") from None
            name = names[0]
            study = open_study(name, url)
        frozen = study.get_trials(deepcopy=False)
        directions = tuple(d.name.lower() for d in study.directions)
    except SegkitError:
        raise
    except Exception as error:  # a corrupt journal or database, an old schema, a server down
        message = (str(error).strip().splitlines() or [""])[0]
        raise SegkitError(f"cannot read the Optuna study in {where}: {type(error).__name__}: {shown(message)}") from error
    return StudyInfo(name, where, directions, [_trial_info(t, sweep_dir) for t in frozen])


def _trial_info(trial: Any, sweep_dir: Path) -> TrialInfo:
    seconds = trial.system_attrs.get(SECONDS)
    if seconds is None and trial.datetime_start is not None and trial.datetime_complete is not None:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()  # trials before segkit:seconds
    job_dir = sweep_dir / str(trial.number)
    return TrialInfo(trial.number, trial.state.name, tuple(trial.values) if trial.values is not None else None,
                     dict(trial.params), None if seconds is None else float(seconds),
                     {int(k): float(v) for k, v in sorted(trial.intermediate_values.items())},
                     trial.datetime_start, trial.datetime_complete, job_dir.resolve() if job_dir.is_dir() else None)


def best_so_far(trials: Sequence[TrialInfo], direction: str) -> list[Point]:
    """Finished trials by completion time, each with the compute spent up to it (its own included;
    none known counts 0) and the best COMPLETE value so far (None before the first).

    Example:
        >>> trials = [TrialInfo(0, "COMPLETE", (0.4,), seconds=2.0), TrialInfo(1, "COMPLETE", (0.3,), seconds=1.0),
        ...           TrialInfo(2, "RUNNING", None, seconds=9.0)]
        >>> [(p.compute, p.best) for p in best_so_far(trials, "minimize")]
        [(2.0, 0.4), (3.0, 0.3)]
    """
    done = [t for t in trials if t.state in FINISHED]
    done.sort(key=lambda t: (t.complete or datetime.max, t.number))
    better = max if direction == "maximize" else min
    points, compute, best = [], 0.0, None
    for trial in done:
        compute += trial.seconds or 0.0
        if trial.state == "COMPLETE" and _finite(trial.value):
            best = trial.value if best is None else better(best, trial.value)
        points.append(Point(compute, best, trial))
    return points


def _last(trial: TrialInfo) -> tuple[int | None, float | None]:
    step = max(trial.intermediate, default=None)
    return step, None if step is None else trial.intermediate[step]


def _value(trial: TrialInfo) -> float | str | None:
    return trial.value if trial.values is None or len(trial.values) == 1 else ";".join(map(repr, trial.values))


def _param(value: Any) -> str:
    """A parameter's markdown cell: 4 significant digits (a learning rate is 1e-05, not 0.0000)."""
    return f"{value:.4g}" if isinstance(value, float) else cell(str(value) if isinstance(value, int) else value)


def trial_table(study: StudyInfo) -> tuple[list[str], list[list[Any]]]:
    """``study_trials.csv``: one row per trial, every parameter a column (empty where not sampled).

    Example:
        >>> study = StudyInfo("s", "optuna.journal", ("maximize",), [
        ...     TrialInfo(0, "COMPLETE", (0.7,), {"lr": 0.01}, 60.0, {100: 0.6, 200: 0.7}),
        ...     TrialInfo(1, "PRUNED", None, {"lr": 0.1, "width": 8}, 20.0, {100: 0.2})])
        >>> header, rows = trial_table(study)
        >>> header[:8], rows[1][:8]
        (['trial', 'state', 'value', 'lr', 'width', 'compute_s', 'n_intermediate', 'last_step'], [1, 'PRUNED', None, 0.1, 8, 20.0, 1, 100])
        >>> state_counts(study), study.best.number
        ({'COMPLETE': 1, 'PRUNED': 1, 'FAIL': 0, 'RUNNING': 0, 'WAITING': 0}, 0)
    """
    params = list(dict.fromkeys(key for t in study.trials for key in t.params))
    header = ["trial", "state", "value", *params, "compute_s", "n_intermediate", "last_step", "last_intermediate",
              "datetime_start", "datetime_complete", "job_dir"]
    rows = [[t.number, t.state, _value(t), *(t.params.get(p) for p in params), t.seconds, len(t.intermediate),
             *_last(t), *(d.isoformat() if d else None for d in (t.start, t.complete)), t.job_dir]
            for t in study.trials]
    return header, rows


def state_counts(study: StudyInfo) -> dict[str, int]:
    """Trials per state, the five states always present, in :data:`STATES` order."""
    counts = dict.fromkeys(STATES, 0)
    for trial in study.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


def summary(study: StudyInfo) -> str:
    """One line for the terminal: trials per state and the best trial."""
    counts = ", ".join(f"{n} {s}" for s, n in state_counts(study).items() if n)
    best = study.best
    tail = f"best trial {best.number}: {best.value} {best.params}" if best else "no best trial yet"
    return f"Optuna study {study.name!r}: {len(study.trials)} trials ({counts or 'none'}); {tail}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3 * 3600 else f"{seconds / 3600:.1f} h"


def study_markdown(study: StudyInfo, csv_name: str = TRIALS_CSV, figure: str | None = None) -> str:
    """The study's section of ``report.md``: states, the best trial, every trial, the figure."""
    params = list(dict.fromkeys(key for t in study.trials for key in t.params))
    compute = math.fsum(t.seconds or 0.0 for t in study.trials)
    best = study.best
    parts = [f"## Optuna study `{study.name}`", "",
             f"Stored in `{study.storage}`; {', '.join(study.directions)}; {len(study.trials)} trials, "
             f"{_duration(compute)} of compute. Trial N ran in job directory `N/`. Exact values: `{csv_name}`.", "",
             markdown_table(["state", "trials"], [[s, str(n)] for s, n in state_counts(study).items()]), ""]
    if best is not None:
        parts += [f"Best: trial {best.number}, value {cell(best.value)}.", "",
                  markdown_table(["parameter", "value"], [[cell(k), _param(v)] for k, v in best.params.items()]), ""]
    else:
        parts += ["No best trial: none completed." if len(study.directions) == 1 else "Multi-objective: no single best.", ""]
    table = [[str(t.number), t.state, cell(_value(t)), *(_param(t.params.get(p)) for p in params),
              cell(t.seconds, "wall_time_s"), str(len(t.intermediate)), cell(_last(t)[0], "global_step"), cell(_last(t)[1])]
             for t in study.trials]
    parts += ["### Trials", "", markdown_table(["trial", "state", "value", *params, "compute_s", "validations",
                                                "last step", "last value"], table), ""]
    if figure:
        parts += [f"![study progress]({figure})", ""]
    return "\n".join(parts)


def write_study(study: StudyInfo, out_dir: Path, figures: bool = True, tag: str = "") -> tuple[list[Path], str]:
    """Write ``study_trials<tag>.csv`` (and ``study_progress<tag>.png``); return them and the markdown section."""
    csv_path = write_csv(out_dir / f"{Path(TRIALS_CSV).stem}{tag}.csv", *trial_table(study))
    written = [csv_path]
    if figures:
        from segkit.report.figures import study_progress

        written.append(study_progress(study, out_dir / f"{Path(PROGRESS_FIGURE).stem}{tag}.png"))
    return written, study_markdown(study, csv_path.name, written[-1].name if figures else None)
