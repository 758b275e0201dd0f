"""``progress.png`` in the run directory, redrawn after each validation (as nnU-Net's progress.png).

Three panels against the optimiser step: ``train/loss`` and ``val/loss``; ``val/mIoU`` and
``val/mIoU_best``; the learning rate (the first optimiser's first parameter group, read from the
optimiser: the rate the next step uses, what ``LearningRateMonitor`` logs as ``lr-<name>`` there).

Cheap on purpose (segkit's per-step cost is counted: tests/test_step_cost.py, docs/overhead.md):
per training step the callback decrements a counter; every ``trainer.log_every_n_steps`` steps
(and at each epoch's last batch) it keeps a reference to the step's already computed loss.
The losses are copied to the host together, one transfer per validation, which then draws the
figure (matplotlib's Agg renderer on a standalone ``Figure``: no pyplot state) and writes it
atomically. Rank 0 only. The points are plain lists of numbers in the callback's checkpoint
state, so a resumed run draws the whole curve, the points before the stop included.

Example:
    >>> import tempfile
    >>> points = {"step": [10, 20], "train_loss": [1.2, 0.9], "lr": [0.01, 0.008], "val_step": [20],
    ...           "val_loss": [1.0], "val_mIoU": [0.3], "val_mIoU_best": [0.3]}
    >>> path = draw_progress(points, Path(tempfile.mkdtemp()) / "progress.png")
    >>> path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segkit.atomic import atomic_path
from segkit.training.run_dir import RunDirectory

log = logging.getLogger(__name__)

# The series kept (and checkpointed): train points at "step", validation points at "val_step".
SERIES = ("step", "train_loss", "lr", "val_step", "val_loss", "val_mIoU", "val_mIoU_best")
# Logged names read at each validation's end, by series.
VAL_NAMES = {"val_loss": "val/loss", "val_mIoU": "val/mIoU", "val_mIoU_best": "val/mIoU_best"}
DPI = 100


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def progress_figure(points: Mapping[str, Sequence[float]]) -> Figure:
    """The figure of ``points`` (lists by :data:`SERIES`; a missing series draws nothing)."""
    get = {name: list(points.get(name, [])) for name in SERIES}
    figure = Figure(figsize=(8, 8.5))
    FigureCanvasAgg(figure)
    loss_ax, score_ax, lr_ax = figure.subplots(3, 1, sharex=True)
    loss_ax.plot(get["step"], get["train_loss"], color="tab:blue", linewidth=1, label="train/loss")
    loss_ax.plot(get["val_step"], get["val_loss"], "o-", color="tab:red", markersize=3, label="val/loss")
    loss_ax.set_ylabel("loss")
    score_ax.plot(get["val_step"], get["val_mIoU"], "o-", color="tab:green", markersize=3, label="val/mIoU")
    if _finite(get["val_mIoU_best"]):
        score_ax.plot(get["val_step"], get["val_mIoU_best"], "--", color="tab:gray", label="val/mIoU_best")
    score_ax.set_ylabel("mIoU")
    lr_ax.plot(get["step"], get["lr"], color="tab:purple", linewidth=1, label="learning rate")
    rates = _finite(get["lr"])
    if rates and min(rates) > 0 and max(rates) > 10 * min(rates):
        lr_ax.set_yscale("log")  # warm-up and decay span decades
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimiser step")
    # Fixed legend places: loc="best" scans every point of every line at each draw.
    for ax, corner in ((loss_ax, "upper right"), (score_ax, "lower right"), (lr_ax, "upper right")):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(loc=corner, fontsize="small")
    miou, best = _finite(get["val_mIoU"]), _finite(get["val_mIoU_best"])
    last_step = max([*get["step"], *get["val_step"]], default=0)
    title = f"step {last_step:g}" + (f": val/mIoU {miou[-1]:.4f}" if miou else "")
    figure.suptitle(title + (f" (best {best[-1]:.4f})" if best else ""))
    # Fixed margins: tight_layout would draw the figure once more (about 50 ms on a laptop CPU).
    figure.subplots_adjust(left=0.13, right=0.97, top=0.94, bottom=0.07, hspace=0.1)
    figure.align_ylabels()
    return figure


def draw_progress(points: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Draw ``points`` (:func:`progress_figure`) to the PNG ``path``, atomically: a reader sees
    the previous figure or the whole new one."""
    figure = progress_figure(points)
    with atomic_path(path) as partial:  # the temporary name has no .png suffix, hence format=
        figure.savefig(partial, format="png", dpi=DPI)
    return path


class ProgressFigure(L.Callback):
    """Keep the run's curves and draw them to ``<dirpath>/progress.png`` after each validation.

    ``every_n_steps``: how often a training loss is kept (default: ``trainer.log_every_n_steps``,
    the steps whose loss Lightning logs). ``last_draw_s``: the last drawing's wall time.

    Example:
        >>> callback = ProgressFigure(dirpath="logs/train/runs/x")  # then Trainer(callbacks=[callback])
        >>> callback.path.name, callback.state_dict()["points"]["step"]
        ('progress.png', [])
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None) -> None:
        self.path = RunDirectory(Path(dirpath)).progress_figure
        self.every_n_steps = every_n_steps
        self.points: dict[str, list[float]] = {name: [] for name in SERIES}
        self.last_draw_s: float | None = None
        # (step, the step's loss tensor as training returned it, lr): copied to the host together.
        self._pending: list[tuple[int, torch.Tensor, float]] = []
        self._countdown = sys.maxsize  # batches until the next kept loss; never, off rank 0
        self._last_batch: float = -1
        self._every, self._accumulate = sys.maxsize, 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning skips on_train_epoch_start when a run resumes mid-epoch; this comes first in any run.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._every = self.every_n_steps or trainer.log_every_n_steps or sys.maxsize  # 0: epoch ends only
        self._accumulate = trainer.accumulate_grad_batches
        self._last_batch = trainer.num_training_batches - 1
        self._countdown = self._batches_to_next(trainer.global_step)

    def _batches_to_next(self, step: int) -> int:
        return (self._every - step % self._every) * self._accumulate

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # The per-step cost: this counter (Lightning's log steps come every log_every_n_steps).
        self._countdown -= 1
        if self._countdown > 0 and batch_idx != self._last_batch:
            return
        step = trainer.global_step
        self._countdown = self._batches_to_next(step)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        kept = self._pending[-1][0] if self._pending else self.points["step"][-1] if self.points["step"] else None
        if isinstance(loss, torch.Tensor) and step != kept:
            self._pending.append((step, loss.detach(), self._learning_rate(trainer)))

    @staticmethod
    def _learning_rate(trainer: L.Trainer) -> float:
        optimizers = trainer.optimizers
        return float(optimizers[0].param_groups[0]["lr"]) if optimizers and optimizers[0].param_groups else math.nan

    def _flush(self) -> None:
        """Move the kept losses to the host, in one copy."""
        if not self._pending:
            return
        steps, losses, rates = zip(*self._pending)
        values = torch.stack([loss.float().reshape(()) for loss in losses]).cpu().tolist()
        self.points["step"] += steps
        # Lightning divides a step's loss by accumulate_grad_batches before training returns it.
        self.points["train_loss"] += [value * self._accumulate for value in values]
        self.points["lr"] += rates
        self._pending = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not trainer.is_global_zero:
            return
        self._flush()
        step = trainer.global_step
        if self.points["val_step"] and self.points["val_step"][-1] == step:
            return  # validated twice at one step (a budget's end right after an epoch's)
        metrics = trainer.callback_metrics
        self.points["val_step"].append(step)
        for series, name in VAL_NAMES.items():
            value = metrics.get(name)
            self.points[series].append(math.nan if value is None else float(value))
        started = time.perf_counter()
        draw_progress(self.points, self.path)
        self.last_draw_s = time.perf_counter() - started
        log.debug("drew %s in %.3f s", self.path, self.last_draw_s)

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"points": {name: list(values) for name, values in self.points.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("points", {})
        self.points = {name: list(saved.get(name, [])) for name in SERIES}
