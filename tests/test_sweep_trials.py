"""Sweep trials that are segkit-train runs: a preempted or killed trial is continued from its own
checkpoint by the next worker and ends exactly as if never stopped; the pruner stops a trial on
one process and under DDP, records it PRUNED and keeps its run directory."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import TINY, TRAIN_CMD, describe, run_cli

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from segkit.sweeps import ownership  # noqa: E402
from segkit.sweeps.storage import open_study  # noqa: E402

TESTS_DIR = str(Path(__file__).resolve().parent)
# hparams_search=optuna with its three searched keys fixed: every trial is this one run.
FIXED = ["model.optimizer.lr=0.02", "model.base_width=8", "model.optimizer.weight_decay=0.0001"]
# 16 training images in batches of 4: 4 steps an epoch, validated after each.
RUN = [*TINY, "trainer.max_epochs=3", "model.scheduler=null", "callbacks.image_grid=null", "logger=csv"]


# A SLURM array task (one worker of an sbatch --array), as SLURM sets it up.
SLURM_ARRAY_TASK = {"SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "3",
                    "SLURM_JOB_NAME": "segkit-sweep", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                    "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


def sweep(tmp_path: Path, *extra: str, **env: str) -> tuple:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(TRAIN_CMD, ["hparams_search=optuna", "hydra.sweeper.n_trials=1", *FIXED, *RUN,
                               f"hydra.sweep.dir={sweep_dir}", *extra], tmp_path, timeout=300, PYTHONPATH=TESTS_DIR,
                   **env)
    return proc, sweep_dir


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stop", ["SIGUSR1", "SIGKILL"])
def test_a_stopped_trial_is_continued_by_the_next_worker_and_ends_as_if_never_stopped(tmp_path: Path, stop: str) -> None:
    reference = run_cli(TRAIN_CMD, [*FIXED, *RUN, f"hydra.run.dir={tmp_path / 'reference'}"], tmp_path, timeout=300)
    assert reference.returncode == 0, describe(reference)

    env: dict[str, str] = {}
    if stop == "SIGUSR1":  # SLURM's warning before a worker's time limit: save, requeue, exit
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
        (bin_dir / "scontrol").chmod(0o755)
        env = {**SLURM_ARRAY_TASK, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        (tmp_path / "plan").write_text("SIGUSR1\n")
        stopper = ["+callbacks.stop._target_=helpers.SignalsAfterSteps", f"+callbacks.stop.plan={tmp_path / 'plan'}",
                   "+callbacks.stop.after=6"]
    else:  # a worker killed outright: it continues from the last periodic last.ckpt (step 4)
        stopper = ["+callbacks.stop._target_=helpers.KillAtStep", "+callbacks.stop.step=6",
                   f"+callbacks.stop.once={tmp_path}", "callbacks.model_checkpoint.last_every_n_train_steps=2"]
    first, sweep_dir = sweep(tmp_path, *stopper, **env)
    assert first.returncode == (128 + signal.SIGUSR1 if stop == "SIGUSR1" else -signal.SIGKILL), describe(first)
    (stopped,) = open_study("segkit", str(sweep_dir / "optuna.journal")).get_trials()
    assert stopped.state == TrialState.RUNNING
    assert stopped.system_attrs.get(ownership.PREEMPTED, False) == (stop == "SIGUSR1")
    if stop == "SIGUSR1":  # the array task asked SLURM to requeue it, once
        assert (tmp_path / "scontrol.calls").read_text().split("\n")[0] == "requeue 4242_3"

    second, _ = sweep(tmp_path, *stopper, **env)
    assert second.returncode == 0, describe(second)
    assert "continuing trial 0" in second.stdout + second.stderr, describe(second)
    (trial,) = open_study("segkit", str(sweep_dir / "optuna.journal")).get_trials()
    assert trial.state == TrialState.COMPLETE
    assert trial.system_attrs[ownership.CONTINUATIONS] == 1
    # Same trial, same run directory, resumed from its checkpoint: the uninterrupted run's weights.
    resumed_log = (sweep_dir / "0" / "train.log").read_text()
    assert "resuming from" in resumed_log, resumed_log
    expected, got = weights(tmp_path / "reference" / "checkpoints" / "last.ckpt"), weights(sweep_dir / "0" / "checkpoints" / "last.ckpt")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    record = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert trial.value == pytest.approx(record["val"]["mIoU_best"], abs=1e-6)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_the_pruner_stops_a_trial_on_every_rank_at_the_same_validation(tmp_path: Path, trainer: str) -> None:
    # A threshold no mIoU reaches: the first validation prunes.
    devices = [] if trainer == "cpu" else ["trainer=ddp_cpu", "trainer.devices=2"]
    first_validation = 4 if trainer == "cpu" else 2  # 16 images, batches of 4 per rank
    proc, sweep_dir = sweep(tmp_path, *devices, "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:2.0}")
    # The study has no complete trial to report as the best.
    assert proc.returncode == 1 and "none of the 1 trials" in proc.stdout + proc.stderr, describe(proc)
    (trial,) = open_study("segkit", str(sweep_dir / "optuna.journal")).get_trials()
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [first_validation]  # reported once, at the first validation
    run = sweep_dir / "0"
    record = json.loads((run / "metrics.json").read_text())
    assert record["pruned_at_step"] == first_validation
    assert "test" not in record or not record["test"]  # a pruned trial is not tested
    # Every rank stopped there (a rank training on would hang the others' collectives): the run's
    # last checkpoint is that step, of 3 epochs.
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == first_validation
