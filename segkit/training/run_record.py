"""``metrics.json``: what a finished training run scored, and how it was run, in its run directory.

One file per run, written once by rank 0 at the end of ``segkit-train``; ``segkit-report``
reads these to compare the runs of a sweep. Scores are the values the run logged (TensorBoard
shows the same numbers), nested by their ``/``-separated names: ``val/IoU/circle`` is
``record["val"]["IoU"]["circle"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from segkit.atomic import atomic_path

RECORD_NAME = "metrics.json"


def nest_scores(flat: dict[str, float]) -> dict[str, Any]:
    """``{"val/IoU/a": 0.5}`` -> ``{"val": {"IoU": {"a": 0.5}}}``.

    Example:
        >>> nest_scores({"val/mIoU": 0.75, "val/IoU/a": 0.5, "test/mIoU": 0.7})
        {'val': {'mIoU': 0.75, 'IoU': {'a': 0.5}}, 'test': {'mIoU': 0.7}}
    """
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def run_overrides() -> list[str]:
    """This run's command-line overrides (a sweep job's own values included), if under Hydra,
    as typed: ``x=${paths.output_dir}/y`` stays unresolved."""
    if not HydraConfig.initialized():
        return []
    return [str(o) for o in OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)]  # type: ignore[union-attr]


def run_record(cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, metrics: dict[str, float],
               wall_time_s: float) -> dict[str, Any]:
    """The content of ``metrics.json`` (plain JSON data)."""
    checkpoint = trainer.checkpoint_callback
    best_score = getattr(checkpoint, "best_model_score", None)
    record: dict[str, Any] = {
        "run_dir": str(Path(cfg.paths.output_dir).resolve()),
        "overrides": run_overrides(),
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "model": OmegaConf.select(cfg, "model._target_"),
        "data": OmegaConf.select(cfg, "data._target_"),
        "wall_time_s": round(wall_time_s, 3),
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "parameters": {
            "total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        },
        "best_checkpoint": getattr(checkpoint, "best_model_path", "") or None,
        "best_monitor": getattr(checkpoint, "monitor", None),
        "best_score": None if best_score is None else float(best_score),
    }
    record.update(nest_scores(metrics))
    return record


def write_run_record(run_dir: Path, cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule,
                     metrics: dict[str, float], wall_time_s: float) -> Path:
    """Write ``<run_dir>/metrics.json`` atomically; NaN (a class absent from a split) stays NaN."""
    path = Path(run_dir) / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    record = run_record(cfg, trainer, model, metrics, wall_time_s)
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_run_record(path: Path) -> dict[str, Any]:
    """``metrics.json`` of a run directory (or the file itself), NaN scores as ``math.nan``."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    return json.loads(path.read_text())
