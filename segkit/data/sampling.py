"""Training order that depends only on ``(seed, epoch)`` and can restart in the middle of an epoch.

A run killed mid-epoch and resumed from its last checkpoint must see the same batches, in the
same order, as a run that was never interrupted. Lightning saves the ``state_dict`` of any
training DataLoader that has one and restores it before iterating (its "stateful loader"
protocol); :class:`ResumableDataLoader` stores its epoch and how many batches it has handed
out, and :class:`EpochSampler` then starts that epoch's order at the next unseen sample.

Written here rather than taken from torchdata's ``StatefulDataLoader`` because the order must
also be a pure function of ``(seed, epoch)`` (a RandomSampler draws from the global RNG when an
epoch starts, which a resumed run reaches in a different state), and shard over DDP ranks
without Lightning re-wrapping the sampler (it leaves a ``DistributedSampler`` as it is).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


class EpochSampler(DistributedSampler):
    """Shuffles ``range(length)`` per epoch, one share per DDP rank; with ``resample``, epoch ``e``
    draws the fresh indices ``e * length ... (e + 1) * length - 1`` (open-ended data sets).

    Order depends only on ``(seed, epoch)``; Lightning calls ``set_epoch`` before every epoch.
    ``start_at(n)`` makes the next iteration skip this rank's first ``n`` samples (a resume).

    Example:
        >>> sampler = EpochSampler(4, seed=0, resample=True)
        >>> sampler.set_epoch(1)
        >>> sorted(sampler)
        [4, 5, 6, 7]
        >>> order = list(sampler); sampler.start_at(3); list(sampler) == order[3:]
        True
    """

    def __init__(self, length: int, seed: int = 0, resample: bool = False,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if distributed else 1)
        rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        super().__init__(range(length), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)  # type: ignore[arg-type]
        self.length = length
        self.resample = resample
        self._start = 0

    def start_at(self, position: int) -> None:
        """Skip the first ``position`` samples of this rank's share in the next iteration only."""
        self._start = position

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self._start = self._start, 0
        offset = self.epoch * self.length if self.resample else 0
        return iter([index + offset for index in indices[start:]])


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose place in the epoch is saved in Lightning checkpoints.

    Resumable with an :class:`EpochSampler` (``sampler=``); with any other sampler (Lightning
    swaps in a sequential one for ``overfit_batches``) it is a plain DataLoader with an empty
    state. Lightning calls ``state_dict`` when it saves a checkpoint and ``load_state_dict``
    before the first batch of a resumed run.

    Example:
        >>> loader = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochSampler(10, seed=1))
        >>> batches = iter(loader); _ = next(batches); _ = next(batches)
        >>> state = loader.state_dict(); state
        {'epoch': 0, 'batches': 2}
        >>> resumed = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochSampler(10, seed=1))
        >>> resumed.load_state_dict(state)
        >>> [b.tolist() for b in resumed] == [b.tolist() for b in batches]
        True
    """

    sampler: EpochSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Its own generator: each new iterator draws a base seed (for worker processes), which
        # would otherwise come from the global RNG and shift augmentation after a resume.
        sampler = kwargs.get("sampler")
        kwargs.setdefault("generator", torch.Generator().manual_seed(getattr(sampler, "seed", 0)))
        super().__init__(*args, **kwargs)
        self._resumable = isinstance(self.sampler, EpochSampler) and self.batch_size is not None
        self._position = 0  # batches handed out in the current epoch
        self._resume_at = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self._position, self._resume_at = self._resume_at, 0
        if self._resumable:
            self.sampler.start_at(self._position * self.batch_size)  # type: ignore[operator]
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: the next batch to hand out is batch ``batches`` of ``epoch``."""
        if not self._resumable:
            return {}
        if self._position >= len(self):
            return {"epoch": self.sampler.epoch + 1, "batches": 0}
        return {"epoch": self.sampler.epoch, "batches": self._position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not self._resumable or not state:
            return
        self.sampler.set_epoch(state["epoch"])
        self._resume_at = state["batches"]
