"""The report's tables: ``report.csv`` (one row per run), ``report_by_config.csv`` (seeds and
folds aggregated) and ``report.md`` (both, best configuration first, and the figures).

CSV cells hold the values exactly as each run's ``metrics.json`` has them (no rounding; a value
a run did not log is empty); ``report.md`` rounds scores to 4 decimals. Extra columns
(``segkit-report --columns``) are any record values by path (``provenance.git_commit``,
``provenance.versions.torch``, ``val/IoU/disc``: :func:`record_value`).

Example:
    >>> from pathlib import Path
    >>> from segkit.report.runs import Run, group_configs
    >>> runs = [Run(Path(f"/r/{i}"), {"test": {"mIoU": v}}, {"w": w, "seed": s})
    ...         for i, (w, s, v) in enumerate([("4", "1", 0.5), ("4", "2", 0.7), ("8", "1", 0.9)])]
    >>> header, rows = config_table(group_configs(runs, ["w", "seed"]), ["w", "seed"])
    >>> header[:6], rows[0][:6]
    (['w', 'n', 'val/mIoU_best_mean', 'val/mIoU_best_std', 'val/mIoU_best_min', 'val/mIoU_best_max'], ['4', 2, None, None, None, None])
    >>> [round(v, 4) for v in rows[0][6:10]]
    [0.6, 0.1414, 0.5, 0.7]
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segkit.atomic import atomic_path
from segkit.report.runs import REPEAT_KEYS, Config, Run, Skipped

# report.csv's columns after run_dir and the swept keys; "parameters" is parameters.total.
RUN_COLUMNS = ("val/mIoU_best", "val/mIoU", "test/mIoU", "test/mDice", "wall_time_s", "global_step", "parameters")
# The scores aggregated over a configuration's seeds and folds in report_by_config.csv.
CONFIG_SCORES = ("val/mIoU_best", "test/mIoU", "test/mDice")
STATS = ("mean", "std", "min", "max")
_MD_FORMATS = {"wall_time_s": "{:.1f}", "global_step": "{}", "parameters": "{}", "n": "{}"}


def record_value(run: Run, path: str) -> Any:
    """The record's value at ``path``, ``/``- or ``.``-separated (tried in that order), or None;
    a list is one shell-quoted string, a mapping its JSON.

    Example:
        >>> run = Run(Path("a"), {"provenance": {"git_commit": "ab12", "argv": ["segkit-train", "seed=1"]}}, {})
        >>> record_value(run, "provenance.git_commit"), record_value(run, "provenance/argv"), record_value(run, "x.y")
        ('ab12', 'segkit-train seed=1', None)
    """
    value = run.get(path)
    if value is None and "." in path:
        value = run.get(path.replace(".", "/"))
    if isinstance(value, list):
        return shlex.join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def run_value(run: Run, column: str) -> Any:
    """The value of a report column for ``run`` (``parameters`` is the total count), or None."""
    if column not in RUN_COLUMNS:
        return record_value(run, column)
    value = run.get(column)
    if column == "parameters" and isinstance(value, dict):
        return value.get("total")
    return value


def ranking_score(runs: Sequence[Run]) -> str:
    """``test/mIoU`` when any run has it, else ``val/mIoU_best``: what configurations are ranked by.

    Example:
        >>> ranking_score([Run(Path("a"), {"val": {"mIoU_best": 0.5}}, {})])
        'val/mIoU_best'
    """
    return "test/mIoU" if any(run.get("test/mIoU") is not None for run in runs) else "val/mIoU_best"


def summarize(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean, sample standard deviation (ddof=1; None for one value), min and max; None ignored.

    Example:
        >>> summarize([1.0, 3.0, None])
        {'mean': 2.0, 'std': 1.4142135623730951, 'min': 1.0, 'max': 3.0}
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return dict.fromkeys(STATS)
    if any(math.isnan(v) for v in present):
        return {"mean": math.nan, "std": math.nan if len(present) > 1 else None, "min": math.nan, "max": math.nan}
    mean = math.fsum(present) / len(present)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in present) / (len(present) - 1)) if len(present) > 1 else None
    return {"mean": mean, "std": std, "min": min(present), "max": max(present)}


def rank_configs(configs: Sequence[Config], score: str) -> list[Config]:
    """``configs`` best first by the mean of ``score``; those without it last, in their order."""
    def key(config: Config) -> float:
        mean = summarize([run.get(score) for run in config.runs])["mean"]
        return -math.inf if mean is None or math.isnan(mean) else mean

    return sorted(configs, key=key, reverse=True)


def run_table(runs: Sequence[Run], swept: Sequence[str], columns: Sequence[str] = ()) -> tuple[list[str], list[list[Any]]]:
    """``report.csv``: ``run_dir``, the swept keys, :data:`RUN_COLUMNS`, then ``columns`` (record
    paths, :func:`record_value`), one row per run."""
    header = ["run_dir", *swept, *RUN_COLUMNS, *columns]
    rows = [[str(run.path), *(run.overrides.get(k) for k in swept),
             *(run_value(run, c) for c in (*RUN_COLUMNS, *columns))]
            for run in runs]
    return header, rows


def config_table(configs: Sequence[Config], swept: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """``report_by_config.csv``: the swept non-seed keys, ``n``, then ``<score>_<stat>``."""
    keys = [key for key in swept if key not in REPEAT_KEYS]
    header = [*keys, "n", *(f"{score}_{stat}" for score in CONFIG_SCORES for stat in STATS)]
    rows = []
    for config in configs:
        stats = [summarize([run.get(score) for run in config.runs]) for score in CONFIG_SCORES]
        rows.append([*(value for _, value in config.settings), len(config.runs),
                     *(summary[stat] for summary in stats for stat in STATS)])
    return header, rows


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write a CSV atomically; None is an empty cell, floats keep every digit (``repr``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    with atomic_path(path) as partial:
        partial.write_text(buffer.getvalue())
    return path


def cell(value: Any, column: str = "") -> str:
    """A markdown cell: scores to 4 decimals, counts as integers, None empty, ``|`` escaped.

    Example:
        >>> cell(0.123456), cell(1200, "global_step"), cell(None), cell("a|b")
        ('0.1235', '1200', '', 'a\\\\|b')
    """
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # counts (scores are floats in the JSON)
    if isinstance(value, float):
        return _MD_FORMATS.get(column, "{:.4f}").format(value)
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table of already formatted cells.

    Example:
        >>> print(markdown_table(["a", "b"], [["1", "2"]]))
        | a | b |
        |---|---|
        | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _spread(summary: dict[str, float | None]) -> str:
    if summary["mean"] is None:
        return ""
    if summary["std"] is None:
        return cell(summary["mean"])
    return f"{cell(summary['mean'])} ± {cell(summary['std'])} ({cell(summary['min'])}–{cell(summary['max'])})"


def _run_name(run: Run, out_dir: Path) -> str:
    out_dir = out_dir.resolve()
    return os.path.relpath(run.path, out_dir) if run.path.is_relative_to(out_dir) else str(run.path)


def report_markdown(configs: Sequence[Config], swept: Sequence[str], out_dir: Path,
                    figures: Sequence[str] = (), skipped: Sequence[Skipped] = (), sections: Sequence[str] = (),
                    columns: Sequence[str] = ()) -> str:
    """``report.md``: ``sections`` (a sweep's Optuna study), then configurations best first (mean ± std
    (min–max) over seeds), every run (with the extra ``columns``), figures, skipped."""
    runs = [run for config in configs for run in config.runs]
    score = ranking_score(runs)
    ranked = rank_configs(configs, score)
    keys = [key for key in swept if key not in REPEAT_KEYS]
    scores = [score, *(s for s in CONFIG_SCORES if s != score)]
    config_rows = [[str(rank), *(cell(v) for _, v in config.settings), str(len(config.runs)),
                    *(_spread(summarize([run.get(s) for run in config.runs])) for s in scores)]
                   for rank, config in enumerate(ranked, 1)]
    run_rows = [[cell(_run_name(run, out_dir)), *(cell(run.overrides.get(k)) for k in swept),
                 *(cell(run_value(run, c), c) for c in (*RUN_COLUMNS, *columns))]
                for config in ranked for run in config.runs]
    parts = [
        "# segkit report", "",
        (f"{len(runs)} runs in {len(configs)} configurations; swept: {', '.join(swept) or 'nothing'}. "
         f"Configurations ranked by mean `{score}`; cells are mean ± sample std (min–max) over the "
         f"configuration's runs (seeds and folds: {', '.join(REPEAT_KEYS)}). Exact values: `report.csv`, `report_by_config.csv`."), "",
        *sections,
        "## Configurations, best first", "",
        markdown_table(["#", *keys, "n", *scores], config_rows), "",
        "## Runs", "",
        markdown_table(["run", *swept, *RUN_COLUMNS, *columns], run_rows), "",
    ]
    if figures:
        parts += ["## Figures", "", *(f"![{Path(name).stem.replace('_', ' ')}]({name})\n" for name in figures)]
    if skipped:
        parts += ["## Skipped", "", *(f"- `{item.path}`: {item.reason}" for item in skipped), ""]
    return "\n".join(parts).rstrip("\n") + "\n"


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (readers see the old file or the whole new one)."""
    with atomic_path(path) as partial:
        partial.write_text(text)
    return path
