"""Composing segkit's configs (with installed plugins') for the contracts and the test suite."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from segkit.config_dir import config_dir
from segkit.plugins import plugin_conf_dirs

# Small batches of small images, in the main process: a fit + test takes about a second.
TINY_SHAPES = ["data.train_size=16", "data.val_size=8", "data.test_size=8", "data.image_size=32",
               "data.batch_size=4", "data.num_workers=0"]
QUIET_CALLBACKS = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]


def config_folders() -> list[Path]:
    """segkit's ``conf/``, then the installed plugins' (Hydra's search path order)."""
    return [Path(config_dir()), *plugin_conf_dirs()]


def config_options(group: str) -> list[str]:
    """The options of a config group across segkit and its plugins: ``<group>/*.yaml`` stems.

    Example:
        >>> {"unet", "fcn8s"} <= set(config_options("model"))
        True
    """
    return sorted({p.stem for folder in config_folders() for p in (folder / group).glob("*.yaml")})


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``<config_name>.yaml`` composed with Hydra's compose API (hydra node included), plugins'
    config folders on the search path as for the commands."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def task_config(config_name: str, overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """A config as ``@hydra.main`` hands it to a task, for in-process calls.

    ``paths.output_dir`` is pinned to ``output_dir``, the Hydra config is registered (so
    ``HydraConfig.get()`` works) and the ``hydra`` node is dropped, as Hydra itself does.
    """
    cfg = compose_config(config_name, [*overrides, f"paths.output_dir={output_dir}"])
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
