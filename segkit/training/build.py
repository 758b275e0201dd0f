"""Build a run's pieces from its config: the model (from the data's spec), callbacks and
loggers, and the run config logged as hyperparameters.

Example:
    >>> from omegaconf import OmegaConf
    >>> group = OmegaConf.create({"lr": {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor"}, "off": None})
    >>> [type(callback).__name__ for callback in instantiate_all(group)]
    ['LearningRateMonitor']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from segkit.data.base import SegmentationDataModule
from segkit.models.base import SegmentationModule
from segkit.training.provenance import provenance_strings


def instantiate_all(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, logger)."""
    if not node:
        return []
    return [instantiate(cfg) for cfg in node.values() if isinstance(cfg, Mapping) and "_target_" in cfg]


def instantiate_model(cfg: DictConfig, datamodule: SegmentationDataModule) -> SegmentationModule:
    """Build the model from the data's declared spec (:class:`segkit.data.spec.DataSpec`):
    class count, names, input channels and ignore index as arguments, the rest as ``data_spec``."""
    spec = datamodule.spec()
    # _convert_="all": plain lists/dicts, so the checkpoint's hyperparameters load with
    # weights_only=True (an OmegaConf ListConfig would not); the spec goes as plain data too.
    return instantiate(cfg, _convert_="all", **spec.model_arguments(), data_spec=spec.to_dict())


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    if isinstance(node, (int, float, str, bool)):
        return {prefix.rstrip("/"): node}
    return {prefix.rstrip("/"): str(node)}


def log_run_config(cfg: DictConfig, model: L.LightningModule, loggers: list[Logger],
                   provenance: Mapping[str, Any] | None = None) -> None:
    """Log the run's config and parameter counts as hyperparameters, ``val/mIoU`` as their metric;
    with ``provenance`` (:func:`segkit.training.provenance.collect_provenance`) also its facts, as
    strings under ``provenance/`` (``provenance/git_commit``, ``provenance/versions/torch``, ...)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    params: dict[str, Any] = {key: config.get(key) for key in ("model", "data", "trainer", "seed", "task_name", "tags")}
    params["model/params/total"] = sum(p.numel() for p in model.parameters())
    params["model/params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flat = _flatten(params)
    if provenance is not None:
        flat.update(provenance_strings(provenance, "provenance/"))
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
