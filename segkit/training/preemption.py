"""Stop on SIGTERM, SIGINT (Ctrl-C) and SLURM's requeue signal with a checkpoint to resume from.

A cluster ends jobs with a signal: SIGTERM on preemption or at the time limit, and the signal
asked for with ``sbatch --signal=USR1@120`` shortly before the limit. :class:`Preemption` lets
the current optimiser step finish, saves ``last.ckpt`` atomically (the exact-resume state
included), asks SLURM to requeue the job on the requeue signal, and exits with ``128 + signal``.
The same command with ``ckpt_path=auto`` (the default) continues the run.

This is the one requeue mechanism: Lightning's own SLURM auto-requeue is switched off in
``segkit-train`` (it saves inside the signal handler, possibly in the middle of a step, and
keeps training after asking for the requeue), and so is submitit's (``conf/hydra/launcher/slurm.yaml``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn

from segkit.training.checkpointing import SegmentationCheckpoint, is_last_batch

log = logging.getLogger(__name__)


# Under DDP, steps between the ranks' agreements on a received signal. A signal then stops the
# run up to this many steps later; SLURM's warning comes minutes ahead (--signal=USR1@120).
AGREE_EVERY_N_STEPS = 10


class Preempted(SystemExit):
    """Raised to end a run after a stop signal was handled; the exit status is ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for array jobs, else the job id."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class Preemption(L.Callback):
    """Finish the step, save ``<checkpoint_dir>/last.ckpt``, requeue (SLURM), exit ``128 + signum``.

    Handles SIGTERM and SIGINT always, and ``requeue_signal`` inside a SLURM job, from the start
    of training to its end (validation included; the save then waits for validation to end). A
    second Ctrl-C stops at once, without saving. Under DDP the ranks agree on the signal every
    :data:`AGREE_EVERY_N_STEPS` steps (and at epoch ends and validations), so all stop at the
    same step even when only one was signalled; a single process checks every step (no
    collective, no sync).

    Example:
        >>> callback = Preemption(checkpoint_dir="runs/1/checkpoints")
        >>> callback.requeue_signal == signal.SIGUSR1
        True
    """

    def __init__(self, checkpoint_dir: str, requeue_signal: str = "SIGUSR1") -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.requeue_signal = signal.Signals[requeue_signal]
        self._received: int | None = None  # the signal, once one came
        self._saved: int | None = None  # the signal, once last.ckpt is saved for it
        self._saved_path: Path | None = None
        self._previous: dict[int, Any] = {}

    def _signals(self) -> list[int]:
        handled = [signal.SIGTERM, signal.SIGINT]
        if SLURMEnvironment.detect() and slurm_job_id() is not None:
            handled.append(self.requeue_signal)
        return handled

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self._received is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self._received = signum
        log.warning("%s received: saving last.ckpt once this step ends (Ctrl-C again stops at once, without saving)",
                    signal.Signals(signum).name)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._received = self._saved = None
        if not _in_main_thread():
            return
        for signum in self._signals():
            self._previous[signum] = signal.signal(signum, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, previous in self._previous.items():
            # Lightning restores its own starting handlers first; keep theirs.
            if _in_main_thread() and signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        ends_epoch = is_last_batch(trainer)
        if (batch_idx + 1) % trainer.accumulate_grad_batches and not ends_epoch:
            return  # mid-accumulation: the gradients so far would be lost
        if ends_epoch and _validates_after_epoch(trainer):
            return  # save after that validation, as an uninterrupted run would
        self._save_if_signalled(trainer, after_validation=False, every_step=ends_epoch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._save_if_signalled(trainer, after_validation=True, every_step=True)

    # The exit waits for the next of these hooks, so that Lightning first logs the step's
    # metrics and ModelCheckpoint keeps what the validation just scored.
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._exit_if_saved(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._exit_if_saved(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_if_saved(trainer)

    def _save_if_signalled(self, trainer: L.Trainer, after_validation: bool, every_step: bool = False) -> None:
        if self._saved is not None:
            return
        signum = self._agreed_signal(trainer, every_step)
        if not signum:
            return
        # Every rank takes part; the trainer's CheckpointIO writes atomically.
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, SegmentationCheckpoint) and checkpoint.save_last:
            # After a validation it writes last.ckpt itself, once it has kept the best checkpoint
            # (at the end of this hook or of the epoch's): saving here first would make it skip both.
            if not after_validation:
                checkpoint.save_last_now(trainer)
            path = Path(checkpoint.dirpath or self.checkpoint_dir) / "last.ckpt"
        else:
            path = self.checkpoint_dir / "last.ckpt"
            trainer.save_checkpoint(path)
        self._saved, self._saved_path = signum, path

    def _exit_if_saved(self, trainer: L.Trainer) -> None:
        if self._saved is None:
            return
        if trainer.is_global_zero:
            log.warning("%s: saved %s at step %d; the same command with ckpt_path=auto resumes from it",
                        signal.Signals(self._saved).name, self._saved_path, trainer.global_step)
            if self._saved == self.requeue_signal and self._saved in self._previous:
                _requeue()  # only now: SLURM may end the job as soon as it requeues it
        raise Preempted(self._saved)

    def _agreed_signal(self, trainer: L.Trainer, every_step: bool = False) -> int:
        """The signal any rank received (0: none); a collective under DDP, so every rank stops together.

        Under DDP the ranks compare notes every :data:`AGREE_EVERY_N_STEPS` steps (and after each
        validation, and at an epoch's end): the all-reduce waits for the step to finish on the
        GPU, which every step would be a host-device sync on the hot path.
        """
        received = self._received or 0
        distributed = trainer.world_size > 1 and dist.is_available() and dist.is_initialized()
        if distributed and not every_step and trainer.global_step % AGREE_EVERY_N_STEPS:
            return 0  # the same on every rank: global_step is
        if distributed:
            flag = torch.tensor([received], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        return received


def _requeue() -> None:
    job_id = slurm_job_id()
    result = subprocess.run(["scontrol", "requeue", str(job_id)], capture_output=True, text=True)
    if result.returncode == 0:
        log.warning("requeued SLURM job %s", job_id)
    else:
        log.error("scontrol requeue %s failed (exit %d): %s", job_id, result.returncode, result.stderr.strip())


def _validates_after_epoch(trainer: L.Trainer) -> bool:
    every = trainer.check_val_every_n_epoch
    return bool(trainer.enable_validation and every and (trainer.current_epoch + 1) % every == 0)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
