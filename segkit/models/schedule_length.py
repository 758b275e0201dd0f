"""Schedule length: the training run's length in optimiser steps or epochs, for LR schedulers
that need it up front (one-cycle, cosine)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer

from segkit.errors import SegkitError


def check_resumed_schedulers(trainer: L.Trainer, owner: str) -> None:
    """A resumed run restores its scheduler, fixed length included: a one-cycle or cosine
    schedule cannot stretch to a longer run, so say so instead of failing mid-epoch."""
    for config in trainer.lr_scheduler_configs:
        if getattr(config.scheduler, "time_budget_s", None) is not None:
            continue  # spans trainer.max_time, whatever the number of steps
        length = run_length(trainer, config.interval, owner)
        for name in ("total_steps", "T_max"):
            planned = getattr(config.scheduler, name, None)
            if planned is not None and planned < length:
                raise SegkitError(
                    f"{type(config.scheduler).__name__} was built for {name}={planned} "
                    f"{config.interval}s but this run has {length}; resume with the "
                    "original trainer.max_steps, or start a new run (ckpt_path=null) to train longer"
                )


def time_budget(trainer: L.Trainer) -> float | None:
    """Seconds of ``trainer.max_time`` (Lightning's Timer), if the run has one."""
    timers = [callback for callback in trainer.callbacks if isinstance(callback, Timer)]  # type: ignore[attr-defined]
    if not timers or timers[0].time_remaining() is None:
        return None
    return timers[0].time_elapsed() + timers[0].time_remaining()  # type: ignore[operator]


def run_length(trainer: L.Trainer, interval: str, owner: str) -> int:
    """The run's number of optimiser steps (``interval="step"``) or of epochs."""
    steps = trainer.estimated_stepping_batches
    epochs = trainer.max_epochs
    if interval == "epoch" and epochs is not None and epochs >= 0:
        return int(epochs)
    if math.isinf(steps):
        raise SegkitError(
            f"{owner}: the LR schedule needs the run's length, but it has none (no "
            "trainer.max_steps or max_epochs); set trainer.max_steps, or with trainer.max_time use "
            "model.scheduler._target_=segkit.models.schedules.OneCycleBudgetLR"
        )
    if interval == "step":
        return int(steps)
    return math.ceil(steps / max(1, int(trainer.num_training_batches)))


def run_length_kwargs(trainer: L.Trainer, factory: Any, interval: str, owner: str) -> dict[str, float]:
    """The run's length for a scheduler ``factory`` whose config leaves it out.

    OneCycleLR's ``total_steps`` and CosineAnnealingLR's ``T_max`` are filled with the
    number of optimiser steps (``interval="step"``) or epochs (``"epoch"``), so a config need
    not repeat what the trainer and data already say. A scheduler that takes
    ``time_budget_s`` (:class:`segkit.models.schedules.OneCycleBudgetLR`) spans
    ``trainer.max_time`` when the run has no step limit.
    """
    given = getattr(factory, "keywords", {})
    params = inspect.signature(getattr(factory, "func", factory)).parameters
    if "time_budget_s" in params and given.get("time_budget_s") is None and given.get("total_steps") is None:
        budget = time_budget(trainer)
        if budget is not None and math.isinf(trainer.estimated_stepping_batches):
            return {"time_budget_s": budget}
    for name in ("total_steps", "T_max"):
        if name in params and given.get(name) is None:
            return {name: run_length(trainer, interval, owner)}
    return {}
