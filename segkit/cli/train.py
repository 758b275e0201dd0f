"""``segkit-train``: compose a config, then fit (and test) a segmentation model.

Examples::

    segkit-train                                   # U-Net on the built-in shapes data
    segkit-train model.base_width=32 trainer.max_epochs=20
    segkit-train experiment=unet_shapes trainer=gpu
    segkit-train -m data.seed=1,2 debug=fdr        # a Hydra multirun
    segkit-train --help                            # config groups and options
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer import setup as lightning_setup
from omegaconf import DictConfig, OmegaConf, open_dict

from segkit.cli.argv import hoist_multirun_flag, multirun_job_ranks
from segkit.cli.common import instantiate_all, instantiate_model, log_run_config
from segkit.cli.config_dir import config_dir
from segkit.cli.errors import SegkitError, exit_on_user_error
from segkit.models.loading import read_checkpoint
from segkit.training.idle_hooks import pass_through_profiling_for_free, skip_idle_step_hooks
from segkit.training.run_record import run_overrides, write_run_record

log = logging.getLogger("segkit.train")


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``None``, ``"last"`` (this run dir's ``checkpoints/last.ckpt``), ``"auto"`` or an existing file.

    ``auto`` resumes from the newer of ``checkpoints/last.ckpt`` and Lightning's
    ``hpc_ckpt_*.ckpt`` (saved on SLURM's signal before a requeue) in the run dir, and starts
    fresh when there is none: one command serves a job's first start and its requeues.
    """
    if ckpt_path is None:
        return None
    if ckpt_path == "auto":
        run_dir = Path(output_dir)
        found = [p for p in (run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")) if p.is_file()]
        return str(max(found, key=lambda p: p.stat().st_mtime_ns)) if found else None
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
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


def budget_seconds(max_time: object) -> float:
    """Seconds of a ``trainer.max_time`` as Lightning takes it ("DD:HH:MM:SS" or timedelta kwargs)."""
    if isinstance(max_time, str):
        days, hours, minutes, seconds = (int(part) for part in max_time.split(":"))
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    return timedelta(**dict(max_time)).total_seconds()  # type: ignore[call-overload]


# Validations per time budget: often enough to pick a good checkpoint, rarely enough that a
# data set of short epochs does not spend a third of its budget validating (measured: 2.2 s of
# validation every 7 s of training on 160 images of ~150 px).
VALIDATIONS_PER_BUDGET = 10
# A time-based trainer.val_check_interval came with Lightning 2.6; older ones validate per epoch.
TIME_BASED_VALIDATION = hasattr(lightning_setup, "_parse_time_interval_seconds")


def apply_time_budget(cfg: DictConfig, given: set[str]) -> None:
    """With ``trainer.max_time``, train until the time is spent: the step and epoch limits of
    the configs (800 steps by default) are lifted, and validation runs every tenth of the budget
    (and at its end), unless those are set on the command line too."""
    max_time = cfg.trainer.get("max_time")
    if max_time is None:
        return
    with open_dict(cfg):
        for key, unlimited in (("max_steps", -1), ("max_epochs", -1)):
            if f"trainer.{key}" not in given:
                cfg.trainer[key] = unlimited
        if TIME_BASED_VALIDATION and not given & {"trainer.val_check_interval", "trainer.check_val_every_n_epoch"}:
            every = max(1, round(budget_seconds(max_time) / VALIDATIONS_PER_BUDGET))
            cfg.trainer.check_val_every_n_epoch = None
            cfg.trainer.val_check_interval = f"00:{every // 3600:02d}:{every // 60 % 60:02d}:{every % 60:02d}"


def cluster_plugins() -> list[object]:
    """Inside a SLURM job, Lightning's SLURM environment without its auto-requeue: segkit's
    :class:`~segkit.training.preemption.Preemption` callback is the one requeue mechanism."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data`` with ``cfg.trainer``; return the final metrics.

    Writes ``metrics.json`` into the run directory (:mod:`segkit.training.run_record`).
    """
    with multirun_job_ranks():
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, float]:
    started = time.monotonic()
    check_required(cfg)
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
    if trainer.is_global_zero and trainer.loggers:
        log_run_config(cfg, model, trainer.loggers)
    skip_idle_step_hooks(trainer.callbacks, model)
    pass_through_profiling_for_free(trainer)

    if cfg.train:
        if ckpt_path and trainer.is_global_zero:
            log.info("resuming from %s (step %s)", ckpt_path, resume_step)
        # weights_only: a checkpoint holds plain data; nothing stored in it is executed.
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        # Without a best checkpoint (fast_dev_run, no validation) test the weights in memory,
        # or with train=false the checkpoint given.
        trainer.test(model, datamodule=datamodule, ckpt_path=best or (None if cfg.train else ckpt_path), weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if trainer.is_global_zero:
        path = write_run_record(Path(cfg.paths.output_dir), cfg, trainer, model, metrics, time.monotonic() - started)
        log.info("wrote %s", path)
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error("segkit-train")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task; returns the optimised metric for sweepers (e.g. Optuna)."""
    metrics = train(cfg)
    summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("val/mIoU", "val/mIoU_best", "test/mIoU") if k in metrics)
    log.info("final metrics: %s", summary or "none (nothing validated)")
    if HydraConfig.initialized():
        log.info("run directory: %s", HydraConfig.get().runtime.output_dir)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def main() -> None:
    """Console entry point ``segkit-train``."""
    sys.argv = hoist_multirun_flag(sys.argv)
    hydra_main()


if __name__ == "__main__":
    main()
