"""Instantiation helpers shared by the entry points (no training logic here)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segkit.data.base import SegmentationDataModule
from segkit.models.base import SegmentationModule


def instantiate_all(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, logger)."""
    if not node:
        return []
    return [instantiate(cfg) for cfg in node.values() if isinstance(cfg, Mapping) and "_target_" in cfg]


def instantiate_model(cfg: DictConfig, datamodule: SegmentationDataModule) -> SegmentationModule:
    """Build the model, taking the class count, names and input channels from the data."""
    # _convert_="all": plain lists/dicts, so the checkpoint's hyperparameters load with
    # weights_only=True (an OmegaConf ListConfig would not).
    return instantiate(
        cfg,
        _convert_="all",
        num_classes=datamodule.num_classes,
        class_names=list(datamodule.class_names),
        in_channels=datamodule.in_channels,
        ignore_index=datamodule.ignore_index,
    )


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    if isinstance(node, (int, float, str, bool)):
        return {prefix.rstrip("/"): node}
    return {prefix.rstrip("/"): str(node)}


def log_run_config(cfg: DictConfig, model: L.LightningModule, loggers: list[Logger]) -> None:
    """Log the run's config and parameter counts as hyperparameters, ``val/mIoU`` as their metric."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    params: dict[str, Any] = {key: config.get(key) for key in ("model", "data", "trainer", "seed", "task_name", "tags")}
    params["model/params/total"] = sum(p.numel() for p in model.parameters())
    params["model/params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flat = _flatten(params)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # As TensorBoardLogger.log_hyperparams, minus its writing a fake val/mIoU=0 scalar.
            from torch.utils.tensorboard.summary import hparams

            writer = logger.experiment._get_file_writer()
            for summary in hparams(flat, {"val/mIoU": 0.0}):
                writer.add_summary(summary)
            logger.hparams.update(flat)
            logger.save()
        else:
            logger.log_hyperparams(flat)


def training_normalization(ckpt_path: str) -> dict[str, list[float]]:
    """``mean``/``std`` of the training run's data (``<run>/.hydra/config.yaml`` beside the
    checkpoint's ``checkpoints/`` folder; ``data.base`` for wrapped data such as patches), if known."""
    run_config = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
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
    run_config = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
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
