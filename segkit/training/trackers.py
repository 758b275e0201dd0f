"""Experiment trackers beside TensorBoard (``logger=wandb``, ``logger=mlflow``): their optional
packages checked before a run writes anything, and their runs ended with segkit's.

A logger whose package is missing would fail deep inside the run, after Hydra wrote the run
directory, with Lightning's hint naming the bare package; :func:`check_tracker_packages` refuses
it first, in one line naming segkit's extra. :class:`TrackerPackagesCheck` calls it as a Hydra
callback (``conf/hydra/default.yaml``), before a run or a sweep touches its directory;
:func:`segkit.training.run.train` calls it too (a sweep over ``logger=...``, a notebook).

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"logger": {"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger"}}})
    >>> missing_tracker_packages(cfg, installed=lambda module: module != "wandb")
    [('wandb', 'lightning.pytorch.loggers.WandbLogger', 'wandb')]
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segkit.errors import SegkitError

INSTALL = "pip install 'segkit[trackers]'"
# A logger's class name (the last part of its _target_) -> the modules it needs.
TRACKER_MODULES = {
    "WandbLogger": ("wandb",),
    "MLFlowLogger": ("mlflow",),
}
# MLflow's database stores (segkit's default is sqlite) need SQLAlchemy and Alembic, which
# mlflow-skinny leaves out.
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
DATABASE_MODULES = ("sqlalchemy", "alembic")


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, not imported: wandb and mlflow take seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken entry in sys.modules
        return False


def _tracking_uri(node: DictConfig) -> str:
    try:
        return str(OmegaConf.select(node, "tracking_uri", default="") or "")
    except OmegaConfBaseException:  # an interpolation only the job resolves (${hydra:...}): as written
        return str(OmegaConf.to_container(node, resolve=False).get("tracking_uri") or "")


def needed_modules(node: DictConfig) -> tuple[str, ...]:
    """The optional modules the logger config ``node`` needs (none for TensorBoard, CSV...)."""
    target = str(node.get("_target_") or "")
    modules = TRACKER_MODULES.get(target.rsplit(".", 1)[-1], ())
    if target.endswith("MLFlowLogger"):
        scheme = _tracking_uri(node).split(":", 1)[0].split("+", 1)[0]  # postgresql+psycopg2://...
        if scheme in DATABASE_SCHEMES:
            modules = (*modules, *DATABASE_MODULES)
    return modules


def missing_tracker_packages(
    config: DictConfig, installed: Callable[[str], bool] | None = None
) -> list[tuple[str, str, str]]:
    """``(logger key, _target_, module)`` for each module a configured logger needs and lacks
    (``installed``: :func:`is_installed` unless given)."""
    installed = installed or is_installed
    loggers = config.get("logger") if isinstance(config, DictConfig) else None
    if not isinstance(loggers, DictConfig):
        return []
    missing = []
    for key, node in loggers.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            missing += [(str(key), str(node._target_), module)
                        for module in needed_modules(node) if not installed(module)]
    return missing


def check_tracker_packages(config: DictConfig) -> None:
    """Refuse (:class:`SegkitError`) a config whose loggers need packages that are not installed."""
    missing = missing_tracker_packages(config)
    if missing:
        key, target, _ = missing[0]
        modules = [module for k, _, module in missing if k == key]
        if len(modules) == 1:
            what = f"the {modules[0]} package, which is"
        else:
            what = f"the {', '.join(modules)} packages, which are"
        raise SegkitError(f"logger.{key} ({target}) needs {what} not installed: {INSTALL}")


def finish_tracker_runs(loggers: Iterable[Any]) -> None:
    """End the W&B run these loggers logged to. Lightning's WandbLogger leaves it open, and the
    next WandbLogger in this process (a sweep's next job, a notebook's next ``train``) would
    log into it instead of starting its own."""
    from lightning.pytorch.loggers import WandbLogger

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None and any(isinstance(lg, WandbLogger) for lg in loggers):
        wandb.finish()


class TrackerPackagesCheck(Callback):
    """Hydra callback: :func:`check_tracker_packages` before a run or a sweep writes anything;
    a refusal prints one line and exits with status 2, as segkit's other user errors do."""

    def _check(self, config: DictConfig) -> None:
        try:
            check_tracker_packages(config)
        except SegkitError as error:
            from segkit.training.run_dir_guard import command_of

            print(f"segkit-{command_of(config)}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)
