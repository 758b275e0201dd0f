"""segkit's OmegaConf resolvers, registered when segkit is imported (``segkit/__init__.py``), so
every config segkit composes (its commands, tests, notebooks) can use them.

- ``${segkit.run_name:${paths.output_dir},${paths.log_dir}}``: the run directory relative to
  the log directory (``train/runs/2025-01-31_12-00-00``, ``train/multiruns/<time>/3``), or its
  last part when it lies elsewhere; the trackers' run name (``conf/logger/wandb.yaml``).

Example:
    >>> from omegaconf import OmegaConf
    >>> OmegaConf.create({"name": "${segkit.run_name:/x/logs/train/runs/t,/x/logs}"}).name
    'train/runs/t'
    >>> run_name("/elsewhere/my_run", "/x/logs")
    'my_run'
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def run_name(output_dir: str, log_dir: str) -> str:
    """``output_dir`` relative to ``log_dir``, or its last part if it is not inside it."""
    run, logs = Path(output_dir).absolute(), Path(log_dir).absolute()
    try:
        return run.relative_to(logs).as_posix()
    except ValueError:
        return run.name


def register() -> None:
    """Register segkit's resolvers (again: a no-op)."""
    if not OmegaConf.has_resolver("segkit.run_name"):
        OmegaConf.register_new_resolver("segkit.run_name", run_name)
