"""The report's figures (PNG), drawn on standalone matplotlib ``Figure`` objects with the Agg
renderer: no pyplot, no global backend or style change, nothing left open.

``score_by_config.png``: each configuration's runs (one dot per seed), their min-max bar and
mean, best configuration on top. ``per_class_iou.png``: per-class IoU of every run (test split
when a run logged one, else val), blank where a class was absent, with a colour bar.
``study_progress.png``: a sweep's Optuna study, best value so far against compute, and every
trial's intermediate values against step.

Example:
    >>> import tempfile
    >>> from segkit.report.runs import Run, group_configs
    >>> runs = [Run(Path(str(s)), {"val": {"mIoU_best": 0.5 + s / 10, "IoU": {"a": 0.4, "b": float("nan")}}},
    ...             {"seed": str(s)}) for s in range(3)]
    >>> out = Path(tempfile.mkdtemp())
    >>> score_by_config(group_configs(runs, ["seed"]), "val/mIoU_best", out / "s.png").name
    's.png'
    >>> per_class_iou(runs, ["seed"], out / "p.png").stat().st_size > 0
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from segkit.atomic import atomic_path
from segkit.report.runs import Config, Run
from segkit.report.study import FINISHED, StudyInfo, best_so_far
from segkit.report.tables import rank_configs

DPI = 120
_MAX_LABEL = 60


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"


def _save(figure: Figure, path: Path) -> Path:
    """Save as PNG atomically (the temporary name has no .png suffix, hence ``format``)."""
    with atomic_path(path) as partial:
        figure.savefig(partial, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _finite(values: Sequence[object]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def score_by_config(configs: Sequence[Config], score: str, path: Path) -> Path:
    """Dot per run, min-max bar and mean of ``score`` for each configuration, best on top."""
    ranked = rank_configs(configs, score)
    figure = Figure(figsize=(7.5, 1.4 + 0.45 * len(ranked)))
    ax = figure.add_subplot()
    labelled = False
    for y, config in enumerate(ranked):
        values = _finite([run.get(score) for run in config.runs])
        if not values:
            continue
        offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        extra = {} if labelled else {"label": "run (seed)"}
        ax.scatter(values, y + offsets, s=18, color="tab:blue", alpha=0.7, zorder=3, **extra)
        extra = {} if labelled else {"label": "min–max"}
        ax.hlines(y, min(values), max(values), color="tab:gray", linewidth=2, zorder=2, **extra)
        extra = {} if labelled else {"label": "mean"}
        ax.plot([np.mean(values)], [y], marker="D", color="tab:red", markerfacecolor="none", markersize=9,
                markeredgewidth=2, linestyle="none", zorder=4, **extra)
        labelled = True
    ax.set_yticks(range(len(ranked)), [_short(c.label) for c in ranked])
    ax.set_ylim(len(ranked) - 0.5, -0.5)  # best on top
    ax.set_xlabel(score)
    ax.set_title(f"{score} by configuration (best first)")
    ax.grid(axis="x", alpha=0.3)
    if labelled:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, f"no run logged {score}", transform=ax.transAxes, ha="center", va="center")
    return _save(figure, path)


def iou_split(runs: Sequence[Run]) -> str | None:
    """``test`` when any run has per-class test IoUs, else ``val`` when any has val ones, else None.

    Example:
        >>> iou_split([Run(Path("a"), {"val": {"IoU": {"a": 0.5}}}, {})])
        'val'
    """
    for split in ("test", "val"):
        if any(isinstance(run.get(f"{split}/IoU"), dict) for run in runs):
            return split
    return None


def per_class_iou(runs: Sequence[Run], swept: Sequence[str], path: Path) -> Path | None:
    """Heatmap of per-class IoU, one row per run (labelled by its swept values), a colour bar;
    None (no file) when no run logged per-class IoUs."""
    split = iou_split(runs)
    if split is None:
        return None
    tables = [run.get(f"{split}/IoU") if isinstance(run.get(f"{split}/IoU"), dict) else {} for run in runs]
    classes = list(dict.fromkeys(name for table in tables for name in table))
    values = np.array([[_value(table.get(name)) for name in classes] for table in tables], dtype=float)
    labels = [_short(" ".join(f"{k}={run.overrides.get(k, '-')}" for k in swept) or run.path.name) for run in runs]
    figure = Figure(figsize=(2.5 + 0.55 * len(classes), 1.5 + 0.35 * len(runs)))
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colormaps["viridis"].with_extremes(bad="white"),
                      vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    if values.size <= 400:
        for (row, column), value in np.ndenumerate(values):
            if math.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center")
    ax.set_yticks(range(len(runs)), labels)
    ax.set_title(f"{split} IoU per class (blank: class absent)")
    figure.colorbar(image, ax=ax, label=f"{split} IoU")
    return _save(figure, path)


def _value(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def study_progress(study: StudyInfo, path: Path) -> Path:
    """Left: the best value so far against the compute spent (trials in completion order; completed
    trials as dots, pruned and failed ones as ticks along the bottom). Right: each trial's
    intermediate values against the global step, a pruned trial ending in an x, the best one thick."""
    single = len(study.directions) == 1
    points = best_so_far(study.trials, study.directions[0]) if single else []
    hours = bool(points) and points[-1].compute > 3 * 3600
    scale, unit = (3600, "h") if hours else (60, "min")
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    curve = [(p.compute / scale, p.best) for p in points if p.best is not None]
    if curve:
        left.step(*zip(*curve), where="post", color="tab:red", label="best so far")
    done = [(p.compute / scale, p.trial.value) for p in points if p.trial.state == "COMPLETE" and p.trial.value is not None]
    if done:
        left.scatter(*zip(*done), s=22, color="tab:blue", zorder=3, label="completed trial")
    for state, marker, colour, label in (("PRUNED", "x", "tab:orange", "pruned trial"), ("FAIL", "|", "tab:gray", "failed trial")):
        xs = [p.compute / scale for p in points if p.trial.state == state]
        if xs:  # x in data, y in axes fractions: along the bottom
            left.scatter(xs, [0.03] * len(xs), transform=left.get_xaxis_transform(), marker=marker, color=colour,
                         zorder=3, label=label)
    left.set_xlim(left=0)
    left.set_xlabel(f"compute spent ({unit}), trials in completion order")
    left.set_ylabel(f"objective ({study.directions[0]})" if single else "objective")
    left.set_title("best value so far" if single else "multi-objective: no single best")
    best = study.best
    colours = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "RUNNING": "tab:green"}
    for trial in study.trials:
        if not trial.intermediate:
            continue
        steps, values = zip(*trial.intermediate.items())
        thick = best is not None and trial.number == best.number
        right.plot(steps, values, color=colours.get(trial.state, "tab:gray"), linewidth=2.5 if thick else 1.0,
                   alpha=1.0 if thick else 0.6, marker=".", linestyle="-" if trial.state in FINISHED else "--")
        if trial.state == "PRUNED":
            right.plot(steps[-1:], values[-1:], marker="x", color="tab:orange", markersize=8, linestyle="none")
    handles = [Line2D([], [], color=c, marker="x" if s == "PRUNED" else ".", linestyle="--" if s == "RUNNING" else "-",
                      label=s.lower()) for s, c in colours.items() if any(t.state == s and t.intermediate for t in study.trials)]
    right.set_xlabel("global step")
    right.set_ylabel("reported value (val/mIoU)")
    right.set_title("intermediate values (thick: the best trial)")
    for ax, legend, empty in ((left, bool(points), "no trial finished yet"), (right, bool(handles), "no value reported yet")):
        ax.grid(alpha=0.3)
        if not legend:
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center")
    if points:
        left.legend(loc="best", fontsize="small")
    if handles:
        right.legend(handles=handles, loc="best", fontsize="small")
    figure.suptitle(f"Optuna study {study.name!r}: {len(study.trials)} trials")
    return _save(figure, path)
