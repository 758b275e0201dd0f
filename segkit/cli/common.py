"""What the entry points that use a trained model read from its training run (no training logic here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segkit.data.files.intensity import IntensityScaling
from segkit.inference.ensemble import Normalization
from segkit.training.run_dir import RunDirectory

if TYPE_CHECKING:
    from segkit.models.base import SegmentationModule


def training_normalization(ckpt_path: str) -> dict[str, list[float]]:
    """``mean``/``std`` of the training run's data (the saved config of the run the checkpoint
    belongs to; ``data.base`` for wrapped data such as patches), if known."""
    run_config = RunDirectory.of_checkpoint(ckpt_path).config_path
    if not run_config.is_file():
        return {}
    try:
        run = OmegaConf.load(run_config)
        node = "data.base" if OmegaConf.select(run, "data.mean") is None and OmegaConf.select(run, "data.base") else "data"
        stats = {key: OmegaConf.select(run, f"{node}.{key}") for key in ("mean", "std")}
        if not all(isinstance(value, ListConfig) for value in stats.values()):
            return {}
        return {key: [float(x) for x in OmegaConf.to_container(value, resolve=True)]  # type: ignore[union-attr]
                for key, value in stats.items()}
    except (OSError, ValueError, TypeError, yaml.YAMLError, OmegaConfBaseException):  # optional: leave them out
        return {}


def training_intensity_config(ckpt_path: str) -> dict[str, Any] | None:
    """``data.intensity``/``percentiles``/``value_range`` of the training run's config, if set."""
    run_config = RunDirectory.of_checkpoint(ckpt_path).config_path
    try:
        run = OmegaConf.load(run_config) if run_config.is_file() else None
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException):
        return None
    if run is None or OmegaConf.select(run, "data.intensity") is None:
        return None
    keys = {"intensity": "mode", "percentiles": "percentiles", "value_range": "value_range"}
    data = OmegaConf.to_container(run.data, resolve=True)
    assert isinstance(data, dict)
    return {name: data.get(key) for key, name in keys.items() if data.get(key) is not None}


def training_intensity(module: SegmentationModule, ckpt_path: str) -> IntensityScaling:
    """The intensity scaling training applied: stored in the checkpoint, else the run's
    ``data.intensity`` options, else the default (8-bit: / 255)."""
    stored = module.input_normalization().get("intensity")
    if stored is None:
        stored = training_intensity_config(ckpt_path)
    return IntensityScaling.from_config(stored)


def trained_normalization(module: SegmentationModule, ckpt_path: str) -> Normalization | None:
    """The input normalisation the model of ``ckpt_path`` was trained with: ``mean``/``std``
    stored in the checkpoint, else its run's config, and :func:`training_intensity`; ``None``
    when ``mean``/``std`` are unknown."""
    stats = {**training_normalization(ckpt_path), **module.input_normalization()}
    if stats.get("mean") is None or stats.get("std") is None:
        return None
    return Normalization.of(stats["mean"], stats["std"], training_intensity(module, ckpt_path))
