"""Exact resume under every setting: training settings x kill points.

Each case SIGKILLs a run at one point (by step, deterministically: ``helpers.KillAt``), runs the
same command again (``ckpt_path=auto`` resumes from the run dir's ``last.ckpt``) and compares
with the uninterrupted run of the same setting: the same final ``global_step``, every weight
``torch.equal``, the same ``train/loss`` curve. The uninterrupted run's ``last.ckpt`` must hold
its final weights.

Data: 24 training scenes of batch 4, so 6 steps an epoch, with augmentation and dropout (every
random stream a resume has to continue); ``last.ckpt`` is also written every 4 steps, so some
kills resume mid-epoch and others from a validation's checkpoint.

The two reproductions of the bugs this matrix was written for, and early stopping with an EMA
of the weights killed mid-epoch, run in the default suite; the rest is marked ``slow``. The settings are split over two test files (validation cadence, and
budgets and step mechanics) so that the README's ``-n 2 --dist loadfile`` runs them side by side.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import CPU, QUIET_CALLBACKS, TINY_MODEL, TRAIN_CMD, describe, run_cli
from test_resume import TESTS_DIR, _losses

BASE = [
    "data.train_size=24", "data.val_size=8", "data.test_size=8", "data.image_size=32", "data.batch_size=4",
    *TINY_MODEL, *QUIET_CALLBACKS, *CPU, "model.dropout=0.3", "++trainer.log_every_n_steps=1", "test=false",
    "callbacks.model_checkpoint.last_every_n_train_steps=4",
]


@dataclass(frozen=True)
class Setting:
    """A training setting, the steps its run ends at, and where to kill it for each kill point."""

    overrides: tuple[str, ...]
    final_step: int
    # kill point -> (KillAt.at, step)
    kills: dict[str, tuple[str, int]]
    workers: int = 0


SETTINGS: dict[str, Setting] = {
    # 3 epochs of 6 steps; validation after each epoch.
    "full epochs": Setting(
        ("++trainer.max_epochs=3",), 18,
        {"mid-epoch": ("train_batch", 9), "after validation": ("train_batch", 6), "epoch end": ("epoch_end", 12),
         "during validation": ("validation", 12), "last step": ("train_batch", 17)}),
    # Epochs cut to 4 of their 6 batches: 3 epochs end at step 12.
    "limit_train_batches": Setting(
        ("++trainer.max_epochs=3", "++trainer.limit_train_batches=4"), 12,
        {"mid-epoch": ("train_batch", 6), "after validation": ("train_batch", 4), "epoch end": ("epoch_end", 8),
         "during validation": ("validation", 4), "last step": ("train_batch", 11)}, workers=2),
    # Validation every 4 batches of an epoch (steps 4 and 10); training ends at 12, unvalidated.
    "val_check_interval int": Setting(
        ("++trainer.max_epochs=2", "++trainer.val_check_interval=4"), 12,
        {"mid-epoch": ("train_batch", 8), "after validation": ("train_batch", 10), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 10), "last step": ("train_batch", 11)}),
    # Validation every half epoch (steps 3, 6, 9, 12).
    "val_check_interval float": Setting(
        ("++trainer.max_epochs=2", "++trainer.val_check_interval=0.5"), 12,
        {"mid-epoch": ("train_batch", 8), "after validation": ("train_batch", 3), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 9), "last step": ("train_batch", 11)}),
    # Validation after every second epoch (step 12 only); the third epoch ends unvalidated.
    "check_val_every_n_epoch": Setting(
        ("++trainer.max_epochs=3", "++trainer.check_val_every_n_epoch=2"), 18,
        {"mid-epoch": ("train_batch", 15), "after validation": ("train_batch", 12), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 12), "last step": ("train_batch", 17)}),
    # A step budget that ends mid-epoch (ValidateAtBudgetEnd validates at step 9).
    "max_steps mid-epoch": Setting(
        ("++trainer.max_steps=9",), 9,
        {"mid-epoch": ("train_batch", 8), "after validation": ("train_batch", 6), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 9), "last step": ("train_batch", 8)}),
    # A time budget far longer than the run (Lightning's Timer state is resumed too), with the
    # step limit given, a constant lr (a time-based schedule is not repeatable) and validation
    # at the budget's end only.
    "max_time": Setting(
        ("++trainer.max_time=00:01:00:00", "++trainer.max_steps=14", "model.scheduler=null"), 14,
        {"mid-epoch": ("train_batch", 9), "after validation": ("train_batch", 7), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 14), "last step": ("train_batch", 13)}),
    # 2 batches per optimiser step: 3 steps an epoch, 9 in all.
    "accumulate_grad_batches": Setting(
        ("++trainer.max_epochs=3", "++trainer.accumulate_grad_batches=2"), 9,
        {"mid-epoch": ("train_batch", 4), "after validation": ("train_batch", 3), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 6), "last step": ("train_batch", 8)}),
    "gradient clipping": Setting(
        ("++trainer.max_epochs=2", "++trainer.gradient_clip_val=0.05"), 12,
        {"mid-epoch": ("train_batch", 9), "after validation": ("train_batch", 6), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 6), "last step": ("train_batch", 11)}),
    # Loader workers (the uninterrupted run has none: augmentation is seeded per sample).
    "2 loader workers": Setting(
        ("++trainer.max_epochs=2",), 12,
        {"mid-epoch": ("train_batch", 9), "after validation": ("train_batch", 6), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 6), "last step": ("train_batch", 11)}, workers=2),
    # Early stopping and an EMA of the weights. Validation every half epoch (steps 3, 6, 9, ...);
    # no later validation beats the first by min_delta=1, so with patience 3 the run stops at
    # step 12 of 18: a resumed run must count the validations before its kill. Checkpoints hold
    # the average (state_dict) and the raw weights (current_model_state); both must match.
    "early stopping and EMA": Setting(
        ("callbacks=[default,early_stopping,ema]", "callbacks.early_stopping.patience=3",
         "callbacks.early_stopping.min_delta=1.0", "callbacks.ema.decay=0.9",
         "++trainer.max_epochs=3", "++trainer.val_check_interval=0.5"), 12,
        {"mid-epoch": ("train_batch", 8), "after validation": ("train_batch", 6), "epoch end": ("epoch_end", 6),
         "during validation": ("validation", 9), "last step": ("train_batch", 11)}),
}
KILL_POINTS = ("mid-epoch", "after validation", "epoch end", "during validation", "last step")
# In the default suite: issue 24's two reproductions (epochs cut by limit_train_batches, killed
# right after the first epoch's validation; an int val_check_interval whose last steps no
# checkpoint held), and early stopping with EMA killed mid-epoch.
DEFAULT_SUITE = {("limit_train_batches", "after validation"), ("val_check_interval int", "last step"),
                 ("early stopping and EMA", "mid-epoch")}


CADENCE = ("full epochs", "limit_train_batches", "val_check_interval int", "val_check_interval float",
           "check_val_every_n_epoch")
BUDGETS_AND_STEPS = ("max_steps mid-epoch", "max_time", "accumulate_grad_batches", "gradient clipping",
                     "2 loader workers", "early stopping and EMA")
assert set(CADENCE) | set(BUDGETS_AND_STEPS) == set(SETTINGS)


def cases(names: tuple[str, ...]) -> list[object]:
    """``(setting, kill point)`` parameters of the named settings, slow-marked but for DEFAULT_SUITE."""
    return [pytest.param(name, point, id=f"{name}-{point}".replace(" ", "_"),
                         marks=() if (name, point) in DEFAULT_SUITE else pytest.mark.slow)
            for name in names for point in KILL_POINTS]


def _train(root: Path, run_dir: Path, setting: Setting, *extra: str, workers: int = 0):  # type: ignore[no-untyped-def]
    args = [*BASE, *setting.overrides, f"data.num_workers={workers}", f"hydra.run.dir={run_dir}", *extra]
    return run_cli(TRAIN_CMD, args, root, PYTHONPATH=TESTS_DIR)


def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


_UNINTERRUPTED: dict[str, Path] = {}


@pytest.fixture
def uninterrupted(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The uninterrupted run of a setting, made once per setting (no loader workers)."""

    def run(name: str) -> Path:
        if name not in _UNINTERRUPTED:
            root = tmp_path_factory.mktemp("uninterrupted")
            proc = _train(root, root / "run", SETTINGS[name])
            assert proc.returncode == 0, describe(proc)
            # last.ckpt holds the final weights when fit ends, whatever the validation cadence.
            assert _last(root / "run")["global_step"] == SETTINGS[name].final_step
            _UNINTERRUPTED[name] = root / "run"
        return _UNINTERRUPTED[name]

    return run


def assert_resumes_exactly(name: str, point: str, tmp_path: Path, uninterrupted) -> None:  # type: ignore[no-untyped-def]
    """Kill setting ``name`` at ``point``, run the same command again, compare with the uninterrupted run."""
    setting = SETTINGS[name]
    expected = uninterrupted(name)
    at, step = setting.kills[point]
    killed = tmp_path / "run"
    kill = ["+callbacks.kill._target_=helpers.KillAt", f"+callbacks.kill.step={step}", f"+callbacks.kill.at={at}",
            f"+callbacks.kill.once={tmp_path}"]
    proc = _train(tmp_path, killed, setting, *kill, workers=setting.workers)
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    proc = _train(tmp_path, killed, setting, *kill, workers=setting.workers)
    assert proc.returncode == 0, describe(proc)

    want, got = _last(expected), _last(killed)
    assert got["global_step"] == want["global_step"] == setting.final_step
    # With weight averaging, state_dict is the average and current_model_state the raw weights.
    for weights in ("state_dict", "current_model_state"):
        assert (weights in want) == (weights in got), weights
        differing = [key for key in want.get(weights, {}) if not torch.equal(want[weights][key], got[weights][key])]
        assert not differing, f"{weights}: weights differ after resuming: {differing}"
    assert _losses(killed) == _losses(expected)
