"""Report each validation's score to the sweep's Optuna trial and stop the run when the study's
pruner says so: the trial is then recorded PRUNED, its run directory kept.

Inert outside a sweep trial (no trial named in the environment: :mod:`segkit.sweeps.trial_link`),
so it sits in ``conf/callbacks/default.yaml`` and costs nothing there. Under DDP rank 0 reports
and decides; the decision is broadcast so that every rank stops after the same validation.
Written by hand: optuna-integration's Lightning callback supports DDP only with an RDB storage,
and a sweep's default storage is a journal file.

Example:
    >>> callback = OptunaPruning(monitor="val/mIoU")
    >>> callback.pruned_at is None
    True
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from segkit.sweeps.trial_link import trial_in_environment

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """At every validation while fitting: report ``monitor`` at the global step, stop if pruned."""

    def __init__(self, monitor: str = "val/mIoU") -> None:
        self.monitor = monitor
        self.pruned_at: int | None = None  # the global step of the validation that pruned the run
        self._trial: Any = None
        self._active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._active = stage == "fit" and trial_in_environment() is not None
        if self._active and trainer.is_global_zero and self._trial is None:
            from segkit.sweeps.trial_link import current_trial

            self._trial = current_trial()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        prune = False
        if trainer.is_global_zero and self._trial is not None:
            prune = self._report(trainer.global_step, trainer.callback_metrics.get(self.monitor))
        if trainer.world_size > 1:
            prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned_at = trainer.global_step
            trainer.should_stop = True

    def _report(self, step: int, score: Any) -> bool:
        value = float(score) if score is not None else math.nan
        if not math.isfinite(value):
            return False  # nothing comparable to report (no validation score yet)
        trial = self._trial
        # A trial continued after its worker stopped validates some steps again: reported already.
        if step not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(value, step)
        if trial.should_prune():
            log.warning("Optuna trial %d pruned at step %d (%s=%.4f)", trial.number, step, self.monitor, value)
            return True
        return False
