"""A time budget (``trainer.max_time``): train until the time is spent, validating every tenth of it.

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"trainer": {"max_time": "00:00:10:00", "max_steps": 800, "max_epochs": None}})
    >>> apply_time_budget(cfg, given={"trainer.max_epochs"})
    >>> cfg.trainer.max_steps, cfg.trainer.max_epochs
    (-1, None)
"""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.trainer import setup as lightning_setup
from omegaconf import DictConfig, open_dict

# Validations per time budget: often enough to pick a good checkpoint, rarely enough that a
# data set of short epochs does not spend a third of its budget validating (measured: 2.2 s of
# validation every 7 s of training on 160 images of ~150 px).
VALIDATIONS_PER_BUDGET = 10
# A time-based trainer.val_check_interval came with Lightning 2.6; older ones validate per epoch.
TIME_BASED_VALIDATION = hasattr(lightning_setup, "_parse_time_interval_seconds")


def budget_seconds(max_time: object) -> float:
    """Seconds of a ``trainer.max_time`` as Lightning takes it ("DD:HH:MM:SS" or timedelta kwargs).

    Example:
        >>> budget_seconds("00:01:30:00"), budget_seconds({"minutes": 2})
        (5400.0, 120.0)
    """
    if isinstance(max_time, str):
        days, hours, minutes, seconds = (int(part) for part in max_time.split(":"))
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    return timedelta(**dict(max_time)).total_seconds()  # type: ignore[call-overload]


def apply_time_budget(cfg: DictConfig, given: set[str]) -> None:
    """With ``trainer.max_time``, train until the time is spent: the step and epoch limits of
    the configs (800 steps by default) are lifted, and validation runs every tenth of the budget
    (and at its end), unless those are set on the command line too (``given``: its keys)."""
    max_time = cfg.trainer.get("max_time")
    if max_time is None:
        return
    with open_dict(cfg):
        for key, unlimited in (("max_steps", -1), ("max_epochs", -1)):
            if f"trainer.{key}" not in given:
                cfg.trainer[key] = unlimited
        if TIME_BASED_VALIDATION and not given & {"trainer.val_check_interval", "trainer.check_val_every_n_epoch"}:
            every = max(1, round(budget_seconds(max_time) / VALIDATIONS_PER_BUDGET))
            cfg.trainer.check_val_every_n_epoch = None
            cfg.trainer.val_check_interval = f"00:{every // 3600:02d}:{every // 60 % 60:02d}:{every % 60:02d}"
