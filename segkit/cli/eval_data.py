"""Which data ``segkit-eval`` scores on: the training run's data config, the user's ``data.*``
overrides on top; for an ensemble, the first model's run, after checking the others trained on
the same data set (folds of it may differ)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from segkit.errors import SegkitError, shown
from segkit.training.run_dir import RunDirectory
from segkit.trust import check_config_targets

# What makes two data configs the same data set: its kind and where its files are (the `base` of
# wrapped data such as data=patches). Batch size, augmentation, workers... may differ.
DATA_SET_KEYS = ("_target_", "root", "base._target_", "base.root")
# Which part of its pool a run validated on (k-fold cross-validation, docs/evaluation.md); the
# test split is outside the pool, the same for every fold.
FOLD_KEYS = ("fold", "folds", "base.fold", "base.folds")


def data_overrides() -> list[str]:
    """The command line's ``data``/``data.*`` overrides (``+``/``~`` ones included)."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    return [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] == "data"]


def _setting(config: DictConfig, key: str) -> Any:
    """``data.<key>`` of a run's config, resolved where it can be (as typed where it cannot)."""
    try:
        return OmegaConf.select(config, f"data.{key}", default=None)
    except OmegaConfBaseException:
        node: Any = OmegaConf.to_container(config, resolve=False).get("data") or {}  # type: ignore[union-attr]
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node


def check_same_data_set(paths: Sequence[str], first: DictConfig, split: str) -> None:
    """Refuse an ensemble whose models' runs trained on another data set than the first's
    (:data:`DATA_SET_KEYS`), or, for ``split=val``, on other folds (one model's validation images
    are then another's training images); runs without a saved config are not compared."""
    for path in paths[1:]:
        run_config = RunDirectory.of_checkpoint(path).config_path
        if not run_config.is_file():
            continue
        try:
            other = OmegaConf.load(run_config)
        except (OSError, yaml.YAMLError, OmegaConfBaseException) as error:
            raise SegkitError(f"{shown(run_config)} (the run of {shown(path)}): unreadable ({type(error).__name__}); "
                              "repair it or move the checkpoint out of that run directory") from None
        for key in DATA_SET_KEYS:
            mine, theirs = _setting(first, key), _setting(other, key)
            if mine != theirs:
                raise SegkitError(
                    f"ckpt_path: {shown(paths[0])}'s run trained on data.{key}={mine} but {shown(path)}'s on "
                    f"data.{key}={theirs}; an ensemble is scored on its first model's data, so its models must "
                    "come from one data set (folds of it may differ)"
                )
        for key in FOLD_KEYS if split == "val" else ():
            mine, theirs = _setting(first, key), _setting(other, key)
            if mine != theirs:
                raise SegkitError(
                    f"split=val: {shown(paths[0])}'s run has data.{key}={mine} but {shown(path)}'s data.{key}="
                    f"{theirs}, so one model's validation images are another's training images; score an "
                    "ensemble of folds with split=test"
                )


def data_config(cfg: DictConfig, paths: Sequence[str] | None = None) -> DictConfig:
    """The data config: the training run's (``<run>/.hydra/config.yaml`` of the checkpoint, the
    first of ``paths`` for an ensemble) with the user's ``data.*`` overrides applied; ``cfg.data``
    if the user chose ``data=...`` or the run's config is not beside the checkpoint."""
    paths = list(paths) if paths is not None else [str(cfg.ckpt_path)]
    run_config = RunDirectory.of_checkpoint(paths[0]).config_path
    overrides = data_overrides()
    if any(o.split("=")[0].lstrip("+~") == "data" for o in overrides) or not run_config.is_file():
        return cfg.data
    trained = OmegaConf.load(run_config)
    # A run directory may come from someone else: its config may name segkit's classes only.
    check_config_targets(OmegaConf.to_container(trained.data, resolve=False), f"{run_config} (data)")
    check_same_data_set(paths, trained, cfg.split)
    dotted = OmegaConf.from_dotlist([o.lstrip("+") for o in overrides if not o.startswith("~")])
    # Put into (a copy of) cfg so that interpolations such as ${paths.data_dir} resolve against
    # it; replaced, not merged: the run's data may have keys eval.yaml's default lacks (data.root).
    base = OmegaConf.merge(cfg)
    with open_dict(base):
        base.data = trained.data
    return OmegaConf.merge(base, dotted).data
