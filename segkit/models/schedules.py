"""A one-cycle learning-rate schedule that spans a step budget or a time budget.

torch's ``OneCycleLR`` needs its length in steps up front. Under ``trainer.max_time`` the
number of steps is unknown (it depends on the machine), so :class:`OneCycleBudgetLR` follows
the elapsed fraction of the time budget instead, on a fine grid of nominal steps, and reuses
torch's schedule (warm-up, cosine anneal, momentum cycling) unchanged. Written here because
no library schedules by wall time.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.optim.lr_scheduler import OneCycleLR

# Nominal steps a time budget is divided into: the LR changes every 1/10,000 of the budget.
TIME_RESOLUTION = 10_000


class OneCycleBudgetLR(OneCycleLR):
    """``OneCycleLR`` over ``total_steps`` steps, or over ``time_budget_s`` seconds of wall time.

    With a time budget, the schedule's position is the elapsed fraction of the budget (kept
    across a resume: the elapsed time is in ``state_dict``); past the budget the LR stays at
    its final value. segkit's modules fill ``total_steps`` or ``time_budget_s`` from the trainer
    (``trainer.max_steps`` or ``trainer.max_time``) when the config leaves them out.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> schedule = OneCycleBudgetLR(opt, max_lr=0.1, time_budget_s=60.0)
        >>> 0 < opt.param_groups[0]["lr"] < 0.1  # warming up
        True
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_lr: float,
        total_steps: int | None = None,
        time_budget_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        if (total_steps is None) == (time_budget_s is None):
            raise ValueError("OneCycleBudgetLR needs exactly one of total_steps and time_budget_s")
        self.time_budget_s = time_budget_s
        self._elapsed_before = 0.0
        self._started: float | None = None
        super().__init__(optimizer, max_lr, total_steps=total_steps or TIME_RESOLUTION, **kwargs)

    def elapsed(self) -> float:
        """Seconds of the budget used so far (this process and any before a resume)."""
        now = time.monotonic()
        if self._started is None:
            self._started = now
        return self._elapsed_before + now - self._started

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.time_budget_s is None:
            return super().get_lr()
        step = min(int(self.elapsed() / self.time_budget_s * TIME_RESOLUTION), TIME_RESOLUTION - 1)
        actual, self.last_epoch = self.last_epoch, step
        try:
            return super().get_lr()
        finally:
            self.last_epoch = actual

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.time_budget_s is not None:  # the clock runs again from the resume on
            self._started = time.monotonic()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.time_budget_s is not None:
            state["_elapsed_before"], state["_started"] = self.elapsed(), None
        return state
