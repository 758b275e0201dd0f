"""Fault tolerance: a run killed mid-epoch resumes to the uninterrupted run's exact weights, and a
kill during a checkpoint write never damages the previous checkpoint."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from helpers import TINY, TRAIN_CMD, describe, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TESTS_DIR = str(Path(__file__).parent)
# 2 epochs of 4 steps with augmentation (random flips) and dropout: everything random that a
# resume has to continue. last.ckpt is refreshed after every step.
RUN = [
    *TINY, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "model.dropout=0.3",
    "callbacks.model_checkpoint.last_every_n_train_steps=1", "test=false",
]
KILL_STEP = 6  # epoch 1, after 2 of its 4 batches


def _train(root: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(TRAIN_CMD, [*RUN, f"hydra.run.dir={run_dir}", *extra], root, PYTHONPATH=TESTS_DIR)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _losses(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    proc = _train(tmp_path, uninterrupted)
    assert proc.returncode == 0, describe(proc)

    proc = _train(tmp_path, killed, "+callbacks.kill._target_=helpers.KillAtStep", f"+callbacks.kill.step={KILL_STEP}")
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    checkpoint = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == KILL_STEP and checkpoint["epoch"] == 1  # mid-epoch

    proc = _train(tmp_path, killed, "ckpt_path=last")
    assert proc.returncode == 0, describe(proc)
    expected, resumed = _weights(uninterrupted), _weights(killed)
    assert expected.keys() == resumed.keys()
    differing = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not differing, f"weights differ after resuming: {differing}"
    # TensorBoard: the resumed run appends to the same curves, step for step.
    assert _losses(killed) == _losses(uninterrupted)
    assert sorted(_losses(killed)) == list(range(8))


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

    from segkit.cli.train import train

    overrides = [*TINY, "trainer.max_epochs=2", "model.optimizer.lr=0", "model.scheduler=null", "model.batch_norm=false", "test=false"]
    train(task_config("train", overrides, tmp_path))
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints[0].startswith("epoch_000-") and checkpoints[1] == "last.ckpt"
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
