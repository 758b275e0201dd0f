"""One training run from a composed ``train`` config: fit, test the best checkpoint, write the record.

:func:`train` is what ``segkit-train`` calls (:mod:`segkit.cli.train`: the Hydra entry point
around it) and what a notebook or a test calls with a config of its own.

Example:
    >>> from omegaconf import OmegaConf
    >>> check_required(OmegaConf.create({"requires": {"data.root": "the data folder"}, "data": {"root": None}}))
    Traceback (most recent call last):
    ...
    segkit.errors.SegkitError: data.root is not set: this experiment needs data.root=... (the data folder)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from segkit.errors import SegkitError
from segkit.models.loading import read_checkpoint
from segkit.sweeps.pruning import OptunaPruning
from segkit.training.budget import apply_time_budget
from segkit.training.build import instantiate_all, instantiate_model, log_run_config
from segkit.training.cuda_check import skip_failing_nvml_check
from segkit.training.idle_hooks import (
    pass_through_profiling_for_free,
    skip_idle_step_hooks,
    skip_unused_gradient_clipping,
    store_training_step_signature,
)
from segkit.training.provenance import collect_provenance, start_git_probes
from segkit.training.run_dir import RunDirectory
from segkit.training.run_record import run_overrides, train_record
from segkit.training.trackers import check_tracker_packages, finish_tracker_runs

log = logging.getLogger("segkit.train")


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``None``, ``"last"`` (this run dir's ``checkpoints/last.ckpt``), ``"auto"`` or an existing file.

    ``auto`` resumes from the newer of ``checkpoints/last.ckpt`` and Lightning's
    ``hpc_ckpt_*.ckpt`` (saved on SLURM's signal before a requeue) in the run dir, and starts
    fresh when there is none: one command serves a job's first start and its requeues.
    """
    if ckpt_path is None:
        return None
    run_dir = RunDirectory(Path(output_dir))
    if ckpt_path == "auto":
        latest = run_dir.latest_checkpoint()
        return None if latest is None else str(latest)
    path = run_dir.last_checkpoint if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        raise SegkitError(
            f"ckpt_path={ckpt_path} : no checkpoint at {path}; pass an existing .ckpt file "
            "(runs keep them in <run dir>/checkpoints/) or leave ckpt_path unset"
        )
    return str(path)


def check_required(cfg: DictConfig) -> None:
    """Each key of ``cfg.requires`` (``{key: what it is}``, set by experiments) must be set.

    Hydra cannot mark an inherited value as missing (merging ``???`` keeps the old value), so
    presets such as ``experiment=fcn16s_voc`` list what the user has to supply here.
    """
    for key, what in (cfg.get("requires") or {}).items():
        if OmegaConf.select(cfg, key) is None:
            raise SegkitError(f"{key} is not set: this experiment needs {key}=... ({what})")


def command_line_keys() -> set[str]:
    """Config keys set on this run's command line (``trainer.max_steps=...``, ``++a.b=...``)."""
    if not HydraConfig.initialized():
        return set()
    return {override.split("=", 1)[0].lstrip("+~") for override in run_overrides()}


def cluster_plugins() -> list[object]:
    """Inside a SLURM job, Lightning's SLURM environment without its auto-requeue: segkit's
    :class:`~segkit.training.preemption.Preemption` callback is the one requeue mechanism."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data`` with ``cfg.trainer``, test if ``cfg.test``; return the
    final metrics. Rank 0 writes the run record, ``metrics.json`` (:mod:`segkit.training.run_record`)."""
    started = time.monotonic()
    # git (commit, dirty) answers while the run builds; rank 0 records it with the rest of the provenance.
    git_probes = start_git_probes() if rank_zero_only.rank == 0 else {}
    check_required(cfg)
    check_tracker_packages(cfg)
    # Before anything is built: a bad checkpoint path or file is refused in one line.
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.output_dir)
    resume_step = read_checkpoint(Path(ckpt_path)).get("global_step") if ckpt_path else None
    apply_time_budget(cfg, command_line_keys())
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate_model(cfg.model, datamodule)
    loggers = instantiate_all(cfg.get("logger"))
    plugins = [*instantiate(cfg.trainer.get("plugins") or [], _convert_="all"), *cluster_plugins()]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=loggers or False, plugins=plugins or None
    )
    provenance = collect_provenance(trainer, git_probes) if trainer.is_global_zero else None
    if trainer.is_global_zero and trainer.loggers:
        log_run_config(cfg, model, trainer.loggers, provenance)
    skip_idle_step_hooks(trainer.callbacks, model)
    skip_unused_gradient_clipping(trainer, model)
    pass_through_profiling_for_free(trainer)
    store_training_step_signature(model)
    skip_failing_nvml_check()

    if cfg.train:
        if ckpt_path and trainer.is_global_zero:
            log.info("resuming from %s (step %s)", ckpt_path, resume_step)
        # weights_only: a checkpoint holds plain data; nothing stored in it is executed.
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    pruned_at = pruned_step(trainer)
    if cfg.test and pruned_at is None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        # Without a best checkpoint (fast_dev_run, no validation) test the weights in memory,
        # or with train=false the checkpoint given.
        trainer.test(model, datamodule=datamodule, ckpt_path=best or (None if cfg.train else ckpt_path), weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    finish_tracker_runs(trainer.loggers)
    if trainer.is_global_zero:
        record = train_record(cfg, trainer, model, metrics, time.monotonic() - started, provenance)
        if pruned_at is not None:
            record["pruned_at_step"] = pruned_at
        log.info("wrote %s", RunDirectory(Path(cfg.paths.output_dir)).write_record(record))
        if pruned_at is not None:
            import optuna  # only a sweep trial can be pruned, and a sweep has optuna

            raise optuna.TrialPruned(f"pruned at step {pruned_at}")
    return metrics


def pruned_step(trainer: L.Trainer) -> int | None:
    """The global step at which a sweep's pruner stopped this run (:class:`OptunaPruning`), or None."""
    return next((c.pruned_at for c in trainer.callbacks if isinstance(c, OptunaPruning) and c.pruned_at is not None),
                None)
