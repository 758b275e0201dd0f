"""Training order that depends only on ``(seed, epoch)`` and can restart in the middle of an epoch.

A run killed mid-epoch and resumed from its last checkpoint must see the same batches, in the
same order, as a run that was never interrupted. Lightning saves the ``state_dict`` of any
training DataLoader that has one and restores it before iterating (its "stateful loader"
protocol); :class:`ResumableDataLoader` stores its epoch and how many batches it has handed
out, and :class:`EpochSampler` then starts that epoch's order at the next unseen sample.

Each sample's augmentation is drawn from its own seed, a function of ``(seed, epoch, index)``
(:class:`SampleKey`, :func:`sample_randomness`), not from the state of whichever worker process
or DDP rank loads it: a resumed run, or one with a different ``num_workers``, augments every
sample exactly as the uninterrupted run did.

Written here rather than taken from torchdata's ``StatefulDataLoader`` because the order must
also be a pure function of ``(seed, epoch)`` (a RandomSampler draws from the global RNG when an
epoch starts, which a resumed run reaches in a different state), and shard over DDP ranks
without Lightning re-wrapping the sampler (it leaves a ``DistributedSampler`` as it is).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


class SampleKey(int):
    """A sample index that carries the seed of the sample's augmentation.

    An ``int``, so any Dataset indexes with it as before; :class:`segkit.data.samples.SampleDataset`
    reads ``seed`` and draws the sample's random transforms inside :func:`sample_randomness`.

    Example:
        >>> key = SampleKey(7, seed=123)
        >>> key + 1, key.seed, [0, 1, 2, 3, 4, 5, 6, 7][key]
        (8, 123, 7)
    """

    seed: int

    def __new__(cls, index: int, seed: int) -> SampleKey:
        key = super().__new__(cls, index)
        key.seed = seed
        return key

    def __reduce__(self) -> tuple[Any, ...]:  # pickled into loader worker processes
        return SampleKey, (int(self), self.seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch`` (64 bits, decorrelated by SeedSequence)."""
    low, high = np.random.SeedSequence([seed, epoch, index]).generate_state(2)
    return int(low) | int(high) << 32


@contextmanager
def sample_randomness(seed: int | None) -> Iterator[None]:
    """Draw the block's random numbers from ``seed``: torch's and Python's global generators are
    seeded for the block and put back afterwards; NumPy's is seeded and left so (saving and
    restoring its state costs 0.3 ms, a tenth of a sample's load; what follows is still a
    function of the sample order, so runs stay reproducible). ``None``: leave them alone.

    torchvision's random transforms draw from torch's global generator; seeding it per sample
    (rather than passing generators through every transform) keeps user transforms working too.
    ``torch.default_generator`` is used directly: ``torch.manual_seed`` costs 0.5 ms a call.

    Example:
        >>> with sample_randomness(5):
        ...     first = torch.rand(1)
        >>> with sample_randomness(5):
        ...     torch.equal(torch.rand(1), first)
        True
    """
    if seed is None:
        yield
        return
    generator = torch.default_generator
    torch_state, python_state = generator.get_state(), random.getstate()
    generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        generator.set_state(torch_state)
        random.setstate(python_state)


class EpochSampler(DistributedSampler):
    """Shuffles ``range(length)`` per epoch, one share per DDP rank; with ``resample``, epoch ``e``
    draws the fresh indices ``e * length ... (e + 1) * length - 1`` (open-ended data sets).

    Order depends only on ``(seed, epoch)``; Lightning calls ``set_epoch`` before every epoch.
    ``start_at(n)`` makes the next iteration skip this rank's first ``n`` samples (a resume).
    Indices come as :class:`SampleKey` with the seed of their augmentation in this epoch.

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
        return iter([SampleKey(index + offset, sample_seed(self.seed, self.epoch, index + offset))
                     for index in indices[start:]])


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
        # Batches the trainer takes from an epoch, when fewer than the loader holds
        # (``limit_train_batches``); set by ExactResume as each epoch starts.
        self.epoch_batches: int | None = None

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
        epoch_end = min(len(self), self.epoch_batches) if self.epoch_batches else len(self)
        if self._position >= epoch_end:
            return {"epoch": self.sampler.epoch + 1, "batches": 0}
        return {"epoch": self.sampler.epoch, "batches": self._position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not self._resumable or not state:
            return
        self.sampler.set_epoch(state["epoch"])
        self._resume_at = state["batches"]
