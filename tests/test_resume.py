"""Fault tolerance: a run killed mid-epoch resumes to the uninterrupted run's exact weights, and a
kill during a checkpoint write never damages the previous checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import QUIET_CALLBACKS, TINY, TINY_DATA, TINY_MODEL, TRAIN_CMD, describe, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TESTS_DIR = str(Path(__file__).parent)
# 2 epochs of 4 steps with augmentation (random flips) and dropout: everything random that a
# resume has to continue. Every run of a test uses one command line, run again after each stop
# (ckpt_path=auto, the default, resumes from the run dir's last.ckpt).
RUN = [*TINY, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "model.dropout=0.3", "test=false"]
KILL_STEP = 6  # epoch 1, after 2 of its 4 batches
SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "segkit-test", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


def _train(root: Path, run_dir: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(TRAIN_CMD, [*RUN, f"hydra.run.dir={run_dir}", *extra], root, PYTHONPATH=TESTS_DIR, **env)


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def _losses(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def _assert_same_weights(expected_run: Path, resumed_run: Path) -> None:
    expected, resumed = _checkpoint(expected_run)["state_dict"], _checkpoint(resumed_run)["state_dict"]
    assert expected.keys() == resumed.keys()
    differing = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not differing, f"weights differ after resuming: {differing}"


def _resumed_at(proc: subprocess.CompletedProcess[str]) -> int:
    """The step a run resumed from, as it logged it (fails if it started fresh)."""
    found = re.search(r"resuming from \S+ \(step (\d+)\)", proc.stdout + proc.stderr)
    assert found, "the second process did not resume:\n" + describe(proc)
    return int(found.group(1))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run never stopped, on one process without loader workers."""
    root = tmp_path_factory.mktemp("uninterrupted")
    proc = _train(root, root / "run")
    assert proc.returncode == 0, describe(proc)
    return root / "run"


def test_a_run_with_loader_workers_killed_mid_epoch_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, uninterrupted: Path
) -> None:
    # 2 loader workers here, none in the uninterrupted run: augmentation is seeded per sample.
    killed = tmp_path / "killed"
    command = ["data.num_workers=2", "callbacks.model_checkpoint.last_every_n_train_steps=1",
               "+callbacks.kill._target_=helpers.KillAtStep", f"+callbacks.kill.step={KILL_STEP}", f"+callbacks.kill.once={tmp_path}"]
    proc = _train(tmp_path, killed, *command)
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    checkpoint = _checkpoint(killed)
    assert checkpoint["global_step"] == KILL_STEP and checkpoint["epoch"] == 1  # mid-epoch

    proc = _train(tmp_path, killed, *command)  # the same command again
    assert proc.returncode == 0, describe(proc)
    assert _resumed_at(proc) == KILL_STEP
    _assert_same_weights(uninterrupted, killed)
    # TensorBoard: the resumed run appends to the same curves, step for step.
    assert _losses(killed) == _losses(uninterrupted)
    assert sorted(_losses(killed)) == list(range(8))


def test_slurm_requeue_sigterm_and_ctrl_c_each_save_exit_and_resume_to_the_uninterrupted_weights(
    tmp_path: Path, uninterrupted: Path
) -> None:
    # A simulated SLURM job (SLURM_* variables, a stand-in scontrol that records its calls) is
    # stopped three times by signals sent one step into each run, then runs to its end:
    # SIGUSR1 (SLURM's warning before the time limit), SIGTERM (preemption), SIGINT (Ctrl-C).
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    plan = tmp_path / "signals"
    plan.write_text("SIGUSR1\nSIGTERM\nSIGINT\n")
    run_dir = tmp_path / "job"
    command = ["data.num_workers=2", "+callbacks.signals._target_=helpers.SignalsAfterSteps", f"+callbacks.signals.plan={plan}",
               "+callbacks.signals.after=1"]
    env = {**SLURM_JOB, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    # (signal, exit status, step of the saved last.ckpt): the signal comes before step 1 after
    # each start; the run stops at the end of that step, or after the validation that ends
    # the epoch when the step was the epoch's last (4 steps an epoch).
    expected = [("SIGUSR1", 128 + signal.SIGUSR1, 2), ("SIGTERM", 128 + signal.SIGTERM, 4), ("SIGINT", 128 + signal.SIGINT, 6)]
    resumed_from = []
    for name, status, step in expected:
        proc = _train(tmp_path, run_dir, *command, **env)
        assert proc.returncode == status, f"{name}: " + describe(proc)
        assert _checkpoint(run_dir)["global_step"] == step, name
        if resumed_from or step != 2:
            resumed_from.append(_resumed_at(proc))
        requeues = calls.read_text().splitlines() if calls.exists() else []
        assert requeues == ["requeue 4242"], f"{name}: scontrol calls {requeues}"  # only SIGUSR1 asks for one
    proc = _train(tmp_path, run_dir, *command, **env)
    assert proc.returncode == 0, describe(proc)
    assert [*resumed_from, _resumed_at(proc)] == [2, 4, 6]

    _assert_same_weights(uninterrupted, run_dir)
    assert _losses(run_dir) == _losses(uninterrupted)
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # Lightning's own requeue stayed off


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_ddp_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    # trainer=ddp_cpu: 2 processes (gloo), 2 steps an epoch each; every rank SIGKILLs itself.
    ddp = [*TINY_DATA, *TINY_MODEL, *QUIET_CALLBACKS, "trainer=ddp_cpu", "trainer.max_epochs=4", "trainer.log_every_n_steps=1",
           "model.dropout=0.3", "test=false", "callbacks.model_checkpoint.last_every_n_train_steps=1"]
    uninterrupted_dir, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    proc = run_cli(TRAIN_CMD, [*ddp, f"hydra.run.dir={uninterrupted_dir}"], tmp_path, timeout=300)
    assert proc.returncode == 0, describe(proc)

    command = [*ddp, f"hydra.run.dir={killed}", "+callbacks.kill._target_=helpers.KillAtStep", "+callbacks.kill.step=3",
               f"+callbacks.kill.once={tmp_path}"]
    proc = run_cli(TRAIN_CMD, command, tmp_path, timeout=300, PYTHONPATH=TESTS_DIR)
    assert proc.returncode != 0, describe(proc)
    checkpoint = _checkpoint(killed)
    assert checkpoint["global_step"] == 3 and checkpoint["epoch"] == 1  # mid-epoch
    assert len(checkpoint["callbacks"]["ExactResume"]["ranks"]) == 2  # each rank's generators

    proc = run_cli(TRAIN_CMD, command, tmp_path, timeout=300, PYTHONPATH=TESTS_DIR)
    assert proc.returncode == 0, describe(proc)
    assert _resumed_at(proc) == 3
    _assert_same_weights(uninterrupted_dir, killed)
    assert _losses(killed) == _losses(uninterrupted_dir)


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    # A child process saves checkpoint 1, then starts saving checkpoint 2 but stops half-way
    # (its file object blocks after some bytes), and the parent SIGKILLs it there.
    path = tmp_path / "checkpoints" / "last.ckpt"
    child = textwrap.dedent(f"""
        import io, sys, time, torch
        from segkit.training.checkpointing import AtomicCheckpointIO
        io_plugin = AtomicCheckpointIO()
        io_plugin.save_checkpoint({{"global_step": 1, "weights": torch.ones(1000)}}, {str(path)!r})
        real_open = open
        class Stalling(io.FileIO):
            def write(self, data):
                written = super().write(data[:1000])
                print("writing", flush=True)
                time.sleep(60)
                return written
        import builtins
        builtins.open = lambda file, mode="r", *a, **k: Stalling(file, "wb") if "w" in mode else real_open(file, mode, *a, **k)
        io_plugin.save_checkpoint({{"global_step": 2, "weights": torch.zeros(100000)}}, {str(path)!r})
    """)
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    previous = torch.load(path, weights_only=True)
    assert previous["global_step"] == 1 and torch.equal(previous["weights"], torch.ones(1000))
    partial_files = [p.name for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert len(partial_files) == 1 and partial_files[0].endswith(".partial")  # hidden, left for the next save
    from segkit.training.checkpointing import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_resuming_from_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCodeWhenUnpickled(marker)}, evil)
    proc = run_cli(TRAIN_CMD, [*TINY, f"ckpt_path={evil}"], tmp_path / "run")
    assert proc.returncode == 2, describe(proc)
    assert not marker.exists()
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("segkit-train: error:")]
    assert f"ckpt_path={evil}: refused" in line


def test_last_ckpt_follows_every_epoch_even_without_a_new_best(tmp_path: Path) -> None:
    # lr=0 and no batch norm statistics: val/mIoU never improves after epoch 0, so no new best checkpoint is written (Lightning
    # would then also skip last.ckpt); last.ckpt must still hold the latest step.
    from helpers import task_config

    from segkit.training.run import train

    overrides = [*TINY, "trainer.max_epochs=2", "model.optimizer.lr=0", "model.scheduler=null", "model.batch_norm=false", "test=false"]
    train(task_config("train", overrides, tmp_path))
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints[0].startswith("epoch_000-") and checkpoints[1] == "last.ckpt"
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
