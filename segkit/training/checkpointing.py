"""Checkpoints that survive a kill, and resumes that continue exactly where a run stopped.

Three pieces, each a Lightning plugin or callback selected in ``conf/``:

- :class:`AtomicCheckpointIO` writes a checkpoint next to its destination and renames it into
  place, so a kill during the write leaves the previous file intact;
- :class:`SegmentationCheckpoint` is Lightning's ModelCheckpoint plus ``last.ckpt`` every N
  training steps, so a run killed mid-epoch loses at most N steps;
- :class:`ExactResume` saves the random number generators' states and the training loader's
  place in the epoch, and restores them when a resumed run starts training, so the same
  batches, augmentations and dropout masks follow.

With the resumable training loader (:mod:`segkit.data.sampling`), a run killed with SIGKILL and
resumed with ``ckpt_path=last`` ends with the weights of a run that was never stopped, with
loader workers and under DDP too: augmentation is seeded per sample by ``(seed, epoch, index)``
and each rank's generator states are kept.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from segkit.atomic import atomic_path
from segkit.data.sampling import ResumableDataLoader

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a hidden temporary file in the destination directory, fsync, then rename.

    Lightning's own save writes through a temporary file in the system temp directory and
    moves it, which is a copy (not atomic) when that directory is on another file system, and
    never fsyncs. A rename within one directory is atomic on POSIX: readers see the old file or
    the new one, never a part. Remote paths (``s3://`` ...) go to Lightning's implementation.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "last.ckpt"
        >>> AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
        >>> torch.load(path, weights_only=True)["global_step"], sorted(p.name for p in path.parent.iterdir())
        (3, ['last.ckpt'])
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, durable=True) as partial, open(partial, "wb") as file:
            torch.save(checkpoint, file)
        # Parts left by earlier processes that were killed mid-write.
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink(missing_ok=True)


class SegmentationCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` is always the latest state: written after every
    validation, and optionally every ``last_every_n_train_steps`` training steps too.

    Lightning (2.6) writes ``last.ckpt`` only when it also writes a top-k checkpoint, so after
    an epoch that is not a new best, ``last.ckpt`` would hold older weights. Its
    ``every_n_train_steps`` excludes saving the best model after each validation; this keeps
    that (best by ``monitor``) and adds mid-epoch ``last.ckpt`` saves for long epochs and
    preemptible jobs. The last batch of an epoch is left to the validation that follows it.

    Example:
        >>> callback = SegmentationCheckpoint(monitor="val/mIoU", mode="max", save_last=True,
        ...                                   last_every_n_train_steps=100)
    """

    def __init__(self, *args: Any, last_every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if last_every_n_train_steps is not None and (last_every_n_train_steps < 1 or not self.save_last):
            raise ValueError(
                f"last_every_n_train_steps={last_every_n_train_steps}: needs save_last=true and a value >= 1 "
                "(or null to save last.ckpt only after validation)"
            )
        self.last_every_n_train_steps = last_every_n_train_steps
        self._state_key: str | None = None
        self._step_at_train_start = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._step_at_train_start = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The last steps of a run need not end in a validation (an int val_check_interval,
        # check_val_every_n_epoch > 1): last.ckpt holds the final weights all the same. A run
        # resumed with nothing left to train (ended, or early-stopped) leaves its last.ckpt as it was.
        if trainer.global_step == self._step_at_train_start:
            return
        super().on_train_end(trainer, pl_module)
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_if_not_saved(trainer)

    def save_last_now(self, trainer: L.Trainer) -> str:
        """Write ``last.ckpt`` now (a stop signal: :class:`segkit.training.preemption.Preemption`);
        return its path. Through this callback, so that the checkpoint it restores knows the file."""
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        return self.last_model_path

    def _save_last_if_not_saved(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @property
    def state_key(self) -> str:
        # Lightning formats it from five settings on every hook call (about 30 Python-level
        # calls a training step); they are fixed once constructed.
        if self._state_key is None:
            self._state_key = super().state_key
        return self._state_key

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        # Lightning's hook saves only every_n_train_steps or train_time_interval (both off by
        # default, and then it only checks whether it may save): skip it when it has nothing to do.
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None or not pl_module.automatic_optimization:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self.last_every_n_train_steps
        if not every or trainer.sanity_checking or trainer.global_step % every:
            return
        ends_accumulation = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if ends_accumulation and not is_last_batch(trainer) and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def is_last_batch(trainer: L.Trainer) -> bool:
    """Whether the training batch now ending is its epoch's last.

    As Lightning decides it (the loader ran out), not from ``batch_idx``: after a mid-epoch resume
    Lightning numbers the remaining batches from one lower than an uninterrupted run does.
    """
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class ExactResume(L.Callback):
    """Keep what a resumed run needs to repeat an uninterrupted one: every rank's RNG states
    (torch CPU and CUDA, NumPy, Python) and the training loader's place in the epoch. Restored
    as training starts, after the sanity check and loader set-up (which draw numbers an uninterrupted run
    drew earlier).

    Lightning restores the loader's place itself unless the train loader was built before the
    checkpoint was read (it is when a scheduler asks for ``estimated_stepping_batches``), hence
    the copy here. Callback state is restored only when resuming a run, so loading a model
    elsewhere (``load_from_checkpoint``) never touches the caller's generators. States are plain
    tensors, tuples and numbers: checkpoints stay loadable with ``weights_only=True``.

    Example:
        >>> callback = ExactResume()
        >>> state = callback.state_dict(); first = torch.rand(1)
        >>> callback.load_state_dict(state); callback.on_train_start(None, None)
        >>> torch.equal(torch.rand(1), first)
        True
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._to_restore: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"ranks": _gather(_generator_states())}
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        if isinstance(loader, ResumableDataLoader):
            state["train_loader"] = loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: L.Trainer | None, pl_module: L.LightningModule | None) -> None:
        state, self._to_restore = self._to_restore, None
        if state is None:
            return
        ranks = state["ranks"] if "ranks" in state else [state]  # checkpoints before per-rank states
        rank, world_size = _rank_and_world_size()
        if len(ranks) != world_size:
            log.warning("resuming on %d processes from a checkpoint saved by %d: the random streams cannot "
                        "continue exactly as in the uninterrupted run", world_size, len(ranks))
        _restore_generator_states(ranks[rank] if rank < len(ranks) else ranks[0])
        loader = trainer.train_dataloader if trainer is not None else None
        if isinstance(loader, ResumableDataLoader) and "train_loader" in state:
            loader.load_state_dict(state["train_loader"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # An epoch cut short by limit_train_batches ends before the loader runs out: the saved
        # place must then point at the next epoch's start, not at the rest of this one.
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableDataLoader) and isinstance(trainer.num_training_batches, int):
            loader.epoch_batches = trainer.num_training_batches


def _generator_states() -> dict[str, Any]:
    """This process's torch (CPU, CUDA), NumPy and Python generator states, as plain data."""
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state()  # type: ignore[misc]
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": (algorithm, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, cached_gaussian),
        "python": random.getstate(),
    }


def _restore_generator_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    algorithm, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((algorithm, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])


def _gather(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (a collective under DDP: each rank's dropout and
    window draws are its own). Checkpoints are saved by all ranks together (ModelCheckpoint and
    :class:`segkit.training.preemption.Preemption` both save at the same step on every rank)."""
    world_size = _rank_and_world_size()[1]
    if world_size == 1:
        return [state]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
