"""Command lines: conveniences applied before Hydra parses ``sys.argv``, and the one Lightning
runs for DDP ranks inside a multirun job."""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write

MULTIRUN_FLAGS = ("-m", "--multirun")


def hoist_multirun_flag(argv: list[str]) -> list[str]:
    """Move ``-m``/``--multirun`` before the overrides, so that
    ``segkit-train experiment=x -m model=a,b`` works as ``segkit-train -m experiment=x model=a,b``
    (Hydra's parser rejects overrides on both sides of the flag).

    Example:
        >>> hoist_multirun_flag(["segkit-train", "experiment=x", "-m", "model=a,b"])
        ['segkit-train', '-m', 'experiment=x', 'model=a,b']
    """
    flags = [a for a in argv[1:] if a in MULTIRUN_FLAGS]
    if not flags:
        return argv
    return [argv[0], flags[0], *[a for a in argv[1:] if a not in MULTIRUN_FLAGS]]


@contextmanager
def multirun_job_ranks() -> Iterator[None]:
    """Inside a multirun job, let DDP ranks > 0 run this job, and leave no rank state behind.

    Lightning starts the other ranks of a machine by running ``sys.argv`` again with
    ``hydra.run.dir=<HydraConfig run.dir>``. In a multirun that is the whole sweep and a run
    directory no job uses: each rank would start its own sweep (an Optuna rank would sample its
    own trial) and write elsewhere. Here the line becomes this job's overrides (the sweeper's
    values included), RUN mode and the job's directory. Afterwards the process group and the
    variables Lightning set (``LOCAL_RANK``, ``MASTER_PORT``...) go, so the next job starts its
    own ranks. Outside a multirun nothing changes. Written by hand: Lightning has no setting for it.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    instance = HydraConfig.instance()
    saved_cfg, saved_argv, saved_environ = instance.cfg, sys.argv, dict(os.environ)
    job = HydraConfig.get()
    narrowed = copy.deepcopy(saved_cfg)
    with read_write(narrowed.hydra):  # type: ignore[union-attr]
        narrowed.hydra.run.dir = job.runtime.output_dir  # type: ignore[union-attr]
    instance.cfg = narrowed
    overrides = OmegaConf.to_container(job.overrides.task, resolve=False)  # as typed: ${...} unresolved
    sys.argv = [saved_argv[0], *map(str, overrides), "hydra.mode=RUN"]  # type: ignore[arg-type]
    try:
        yield
    finally:
        instance.cfg, sys.argv = saved_cfg, saved_argv
        os.environ.clear()
        os.environ.update(saved_environ)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
