"""``metrics.json``: what a finished run scored, and how it was run, in its run directory.

One file per run, written atomically once by rank 0 at the end of ``segkit-train`` and of
``segkit-eval`` (:meth:`segkit.training.run_dir.RunDirectory.write_record`); ``segkit-report``
reads them to compare runs. One schema for both commands:

- ``command`` (``"train"`` or ``"eval"``), ``run_dir``, ``overrides`` (as typed), ``task_name``,
  ``seed``, ``model`` (the module's class), ``data`` (the data config's ``_target_``),
  ``wall_time_s``, ``global_step`` and ``epochs`` (for eval: the checkpoint's), ``parameters``
  (``total``, ``trainable``);
- the scores the run logged (TensorBoard shows the same numbers), nested by their
  ``/``-separated names: ``val/IoU/circle`` is ``record["val"]["IoU"]["circle"]``;
- train: ``best_checkpoint``, ``best_monitor``, ``best_score``;
- eval: ``ckpt_path``, ``split`` (the one score key), ``class_names``, ``confusion_matrix``
  (counts, rows truth, columns prediction), ``tta``, ``scales``;
- ``provenance`` (both; :func:`segkit.training.provenance.collect_provenance`): ``argv`` (the
  command line as typed; under DDP rank 0's), ``cwd``, ``hostname``, ``platform``, ``cpu``,
  ``cpu_count``, ``cuda_device_count``, ``cuda_devices`` (names, when the run uses CUDA),
  ``accelerator``, ``strategy``, ``devices`` (per node), ``num_nodes``, ``world_size``,
  ``git_root``/``git_commit``/``git_dirty`` (segkit's source checkout; null for an installed
  wheel or without git), ``workdir_git`` (``{root, commit, dirty}`` of the working directory's
  repository when it is another one, else null) and ``versions`` (python, torch, torchvision,
  lightning, hydra-core, omegaconf, numpy, segkit, and the optional extras installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from segkit.training.provenance import collect_provenance


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


def record_header(command: str, cfg: DictConfig, model: L.LightningModule, *, data_class: str | None,
                  wall_time_s: float, global_step: int | None, epochs: int | None,
                  provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keys every record has, before its scores and its command's own keys; ``provenance``
    is collected here when not given."""
    return {
        "command": command,
        "run_dir": str(Path(cfg.paths.output_dir).resolve()),
        "overrides": run_overrides(),
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "data": data_class,
        "wall_time_s": round(wall_time_s, 3),
        "global_step": global_step,
        "epochs": epochs,
        "parameters": {
            "total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        },
        "provenance": collect_provenance() if provenance is None else provenance,
    }


def train_record(cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, metrics: dict[str, float],
                 wall_time_s: float, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """``segkit-train``'s record (plain JSON data): ``metrics`` are its logged scores."""
    checkpoint = trainer.checkpoint_callback
    best_score = getattr(checkpoint, "best_model_score", None)
    record = record_header("train", cfg, model, data_class=OmegaConf.select(cfg, "data._target_"),
                           wall_time_s=wall_time_s, global_step=trainer.global_step, epochs=trainer.current_epoch,
                           provenance=provenance if provenance is not None else collect_provenance(trainer))
    record.update(nest_scores(metrics))
    record.update(
        best_checkpoint=getattr(checkpoint, "best_model_path", "") or None,
        best_monitor=getattr(checkpoint, "monitor", None),
        best_score=None if best_score is None else float(best_score),
    )
    return record


def eval_record(cfg: DictConfig, module: L.LightningModule, data_class: str | None, checkpoint_step: int | None,
                checkpoint_epoch: int | None, scores: dict[str, float], wall_time_s: float,
                provenance: dict[str, Any] | None = None, **extras: Any) -> dict[str, Any]:
    """``segkit-eval``'s record: ``scores`` are the split's logged ones (``val/mIoU``, ...);
    ``extras`` its own keys (``ckpt_path``, ``split``, ``class_names``, ...)."""
    record = record_header("eval", cfg, module, data_class=data_class, wall_time_s=wall_time_s,
                           global_step=checkpoint_step, epochs=checkpoint_epoch, provenance=provenance)
    record.update(nest_scores(scores))
    record.update(extras)
    return record
