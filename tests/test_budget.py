"""The run's length: a step budget by default, or a time budget (trainer.max_time) that the
run fills and the one-cycle learning rate spans."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from helpers import CPU, QUIET_CALLBACKS, TINY_DATA, TINY_MODEL, task_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segkit.training.budget import apply_time_budget, budget_seconds
from segkit.training.run import command_line_keys, train
from segkit.models import schedules
from segkit.models.schedules import OneCycleBudgetLR


def lr_sequence(schedule: type, steps: int, **kwargs: object) -> list[tuple[float, float]]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=5e-3)
    scheduler = schedule(optimizer, max_lr=5e-3, pct_start=0.15, **kwargs)
    seen = []
    for _ in range(steps):
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"][0]))
        optimizer.step()
        scheduler.step()
    return seen


def test_a_step_budget_follows_torch_one_cycle_exactly() -> None:
    assert lr_sequence(OneCycleBudgetLR, 300, total_steps=300) == lr_sequence(
        torch.optim.lr_scheduler.OneCycleLR, 300, total_steps=300)


def test_a_time_budget_follows_the_elapsed_fraction_and_survives_a_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scheduler steps before any optimizer step here: torch's order warning is beside the point.
    monkeypatch.setattr(torch.optim.lr_scheduler.warnings, "warn", lambda *a, **k: None)
    clock = [1000.0]
    monkeypatch.setattr(schedules.time, "monotonic", lambda: clock[0])
    reference = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), max_lr=0.1, total_steps=schedules.TIME_RESOLUTION)
    expected_lr = {}
    for step in range(schedules.TIME_RESOLUTION):
        expected_lr[step] = reference.get_last_lr()[0]
        reference.step()
        if step > 7600:
            break
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = OneCycleBudgetLR(optimizer, max_lr=0.1, time_budget_s=100.0)
    clock[0] += 40.0  # 40 % of the budget, however many steps that took
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr[4000])
    state = scheduler.state_dict()
    clock[0] += 500.0  # the job waits in the queue: not part of the budget
    resumed_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    resumed = OneCycleBudgetLR(resumed_optimizer, max_lr=0.1, time_budget_s=100.0)
    resumed.load_state_dict(state)
    clock[0] += 36.0
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr[7600])
    clock[0] += 1000.0  # past the budget: the final, smallest lr
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 25 / 1e4, rel=1e-3)


@pytest.mark.parametrize(("text", "seconds"), [("00:00:04:00", 240.0), ("01:02:03:04", 93784.0)])
def test_budget_seconds(text: str, seconds: float) -> None:
    assert budget_seconds(text) == seconds
    assert budget_seconds({"minutes": 4}) == 240.0


def test_a_time_budget_lifts_the_step_limit_unless_it_is_given_too(tmp_path: Path) -> None:
    cfg = task_config("train", ["++trainer.max_time=00:00:04:00"], tmp_path)
    apply_time_budget(cfg, command_line_keys())
    assert (cfg.trainer.max_steps, cfg.trainer.max_epochs) == (-1, -1)
    assert cfg.trainer.check_val_every_n_epoch is None and cfg.trainer.val_check_interval == "00:00:00:24"
    cfg = task_config("train", ["++trainer.max_time=00:00:04:00", "trainer.max_steps=50"], tmp_path)
    apply_time_budget(cfg, command_line_keys())
    assert (cfg.trainer.max_steps, cfg.trainer.max_epochs) == (50, -1)


def test_a_timed_run_trains_until_the_budget_is_spent_and_its_lr_anneals_over_it(tmp_path: Path) -> None:
    overrides = [*TINY_DATA, *TINY_MODEL, *QUIET_CALLBACKS, *CPU, "test=false", f"paths.root_dir={tmp_path}",
                 "++trainer.max_time=00:00:00:12"]
    started = time.monotonic()
    metrics = train(task_config("train", overrides, tmp_path / "run"))
    assert time.monotonic() - started >= 12
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    lrs = events.Scalars("lr-AdamW")
    steps = lrs[-1].step
    assert steps > 4 * 4, "more than the 4 epochs of 4 steps a fixed epoch count would have given"
    peak = max(entry.value for entry in lrs)
    # Annealed over the budget: falling through the second half, near its floor at the end.
    second_half = [entry.value for entry in lrs[len(lrs) // 2:]]
    assert second_half == sorted(second_half, reverse=True) and lrs[-1].value < peak / 5
    assert len(events.Scalars("val/mIoU")) >= 3 and "val/mIoU" in metrics


def test_a_step_budget_that_ends_mid_epoch_still_validates_and_keeps_a_best_checkpoint(tmp_path: Path) -> None:
    # 64 scenes at batch 4 are 16 steps an epoch; the budget ends after 6.
    overrides = [*TINY_DATA, "data.train_size=64", *TINY_MODEL, *QUIET_CALLBACKS, *CPU, "test=false",
                 f"paths.root_dir={tmp_path}", "trainer.max_steps=6"]
    metrics = train(task_config("train", overrides, tmp_path / "run"))
    assert "val/mIoU" in metrics
    best = list((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    assert len(best) == 1 and torch.load(best[0], weights_only=True)["global_step"] == 6
