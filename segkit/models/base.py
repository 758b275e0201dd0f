"""The LightningModule every segkit architecture inherits: loss, metrics, optimiser, logging.

A subclass only builds ``self.net`` (a plain ``torch.nn.Module`` from :mod:`segkit.nets` that
maps ``(N, C_in, H, W)`` images to ``(N, num_classes, H, W)`` logits) and calls
``self.save_hyperparameters(ignore=NOT_HPARAMS, logger=False)`` in its ``__init__`` (segkit-train
logs the whole run config instead), so that
``load_from_checkpoint(path)`` rebuilds it with no extra arguments.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torch import nn
from torchmetrics import MaxMetric

from segkit.em_metrics import EMMetrics
from segkit.errors import SegkitError
from segkit.losses import WeightMapCrossEntropy
from segkit.metrics import SegmentationMetrics

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

# Optimiser and scheduler are Hydra partials (functools.partial objects). They are kept out of
# the checkpoint's hyperparameters so that a checkpoint holds plain data only (loadable with
# weights_only=True); the run's full config, optimiser included, is logged by segkit-train.
NOT_HPARAMS = ("optimizer", "scheduler")


class SegmentationModule(L.LightningModule):
    """Cross-entropy training and confusion-matrix metrics for any per-pixel classifier.

    Args:
        num_classes: number of classes (logit channels).
        class_names: one name per class, used in the logged keys ``val/IoU/<name>``.
        ignore_index: target value excluded from loss and metrics (PASCAL VOC uses 255).
        loss_reduction: ``"mean"`` over valid pixels, or ``"sum"`` as in the FCN reference.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``); default AdamW(lr=1e-3).
        scheduler: ``optimizer -> LRScheduler`` (a Hydra ``_partial_``) or ``None``.
        scheduler_interval: step the scheduler every ``"epoch"`` or every ``"step"``.
        weight_map: ``{"object_class": ..., "w0": 10, "sigma": 5}`` weighs each pixel's loss
            with the U-Net paper's weight map (:class:`segkit.losses.WeightMapCrossEntropy`),
            computed from each training mask; ``None``: plain cross-entropy.

    With a data module that has a ``membrane_class`` (EM data, two classes), validation and
    test also log ``pixel_error``, ``v_rand`` and ``rand_error`` (:class:`segkit.em_metrics.EMMetrics`).
    """

    net: nn.Module

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        loss_reduction: str = "mean",
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        weight_map: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        self.num_classes = num_classes
        self.class_names = list(class_names or [f"class_{i}" for i in range(num_classes)])
        self.ignore_index = ignore_index
        self.loss_reduction = loss_reduction
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.weighted_loss = (
            WeightMapCrossEntropy(**dict(weight_map), ignore_index=ignore_index, reduction=loss_reduction)
            if weight_map else None
        )
        self.val_em_metrics: EMMetrics | None = None
        self.test_em_metrics: EMMetrics | None = None
        # One confusion-matrix metric per stage, each accumulated over its whole split.
        self.train_metrics, self.val_metrics, self.test_metrics = (
            SegmentationMetrics(num_classes, ignore_index, self.class_names) for _ in range(3)
        )
        # A run resumed mid-epoch continues the epoch's training confusion matrix.
        self.train_metrics.persistent(True)
        self.val_miou_best = MaxMetric()
        # Saved in checkpoints, so a resumed run keeps its best-so-far.
        self.val_miou_best.persistent(True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        membrane_class = getattr(datamodule, "membrane_class", None)
        if membrane_class is not None and self.num_classes == 2 and self.val_em_metrics is None:
            self.val_em_metrics = EMMetrics(membrane_class, self.ignore_index).to(self.device)
            self.test_em_metrics = EMMetrics(membrane_class, self.ignore_index).to(self.device)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy, weighted by the U-Net weight map if configured (objects from
        ``instances`` when the data gives them: ``data.mask_type=instances``)."""
        if self.weighted_loss is not None and masks.dim() == 3:
            return self.weighted_loss(logits, masks, instances=instances)
        return F.cross_entropy(
            logits, masks, ignore_index=self.ignore_index, reduction=self.loss_reduction
        )

    def training_logits(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, C, H, W), targets (N, H, W))`` of a training batch; a hook for nets
        that train on something other than whole images (the patch CNN's windows)."""
        images, masks = batch
        return self(images), masks

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        # A third item, instance ids, comes from data.mask_type=instances (weight-map loss).
        instances = batch[2] if len(batch) > 2 else None
        logits, masks = self.training_logits(batch[:2])  # type: ignore[arg-type]
        loss = self.loss(logits, masks, instances)
        self.train_metrics.update(logits.detach(), masks)  # about 0.4 ms a step (batch 8, 64 px, CPU)
        if self._loss_is_written(batch_idx):
            self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def _loss_is_written(self, batch_idx: int) -> bool:
        """Whether to ``self.log`` this step's loss: on the steps whose logged values Lightning
        writes to the loggers (every ``trainer.log_every_n_steps``), and on each epoch's first
        and last batch for the progress bar and ``callback_metrics``.

        Lightning's ``self.log`` costs about 1 ms a call on a CPU (it moves its stored result to
        the value's device every call); between written steps it only updated the progress bar.
        The loggers get the same values at the same steps as with a call every step.
        """
        if self._trainer is None:
            return True
        trainer = self.trainer
        if trainer.fast_dev_run or trainer.accumulate_grad_batches != 1 or trainer.log_every_n_steps <= 0:
            return True
        # Inside training_step global_step counts the steps already taken, as Lightning's own
        # cadence check (batches that stepped + 1) does.
        written = (self.global_step + 1) % trainer.log_every_n_steps == 0
        return written or batch_idx == 0 or batch_idx + 1 >= trainer.num_training_batches

    def on_train_epoch_end(self) -> None:
        scores = self.train_metrics.compute()
        self.log_dict({"train/mIoU": scores["mIoU"], "train/pixel_acc": scores["pixel_acc"]})
        self.train_metrics.reset()

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: SegmentationMetrics, stage: str) -> None:
        images, masks = batch
        logits = self(images)
        metrics.update(logits, masks)
        em_metrics = self.val_em_metrics if stage == "val" else self.test_em_metrics
        if em_metrics is not None:
            em_metrics.update(logits, masks)
        self.log(f"{stage}/loss", self.loss(logits, masks), batch_size=images.shape[0], sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        logged = self.val_metrics.as_log_dict("val")
        self.val_metrics.reset()
        # The sanity check runs a couple of batches on an untrained net: not a "best".
        if not self.trainer.sanity_checking:
            self.val_miou_best.update(logged["val/mIoU"])
            logged["val/mIoU_best"] = self.val_miou_best.compute()
        self.log("val/mIoU", logged.pop("val/mIoU"), prog_bar=True)
        self.log_dict(logged)
        self._log_em_metrics(self.val_em_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.as_log_dict("test"))
        self.test_metrics.reset()
        self._log_em_metrics(self.test_em_metrics, "test")

    def _log_em_metrics(self, metrics: EMMetrics | None, stage: str) -> None:
        if metrics is None:
            return
        self.log_dict({f"{stage}/{name}": value.float() for name, value in metrics.compute().items()})
        metrics.reset()

    def parameter_groups(self) -> list[nn.Parameter] | list[dict[str, Any]]:
        """What the optimiser gets: every trainable parameter; subclasses may split groups."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        params = self.parameter_groups()
        if self.optimizer_factory is None:
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=1e-3)
        else:
            optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, **self._run_length_kwargs())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def on_train_start(self) -> None:
        # A resumed run restores its scheduler, fixed length included: a one-cycle or cosine
        # schedule cannot stretch to a longer run, so say so instead of failing mid-epoch.
        for config in self.trainer.lr_scheduler_configs:
            if getattr(config.scheduler, "time_budget_s", None) is not None:
                continue  # spans trainer.max_time, whatever the number of steps
            run_length = self._run_length(config.interval)
            for name in ("total_steps", "T_max"):
                planned = getattr(config.scheduler, name, None)
                if planned is not None and planned < run_length:
                    raise SegkitError(
                        f"{type(config.scheduler).__name__} was built for {name}={planned} "
                        f"{config.interval}s but this run has {run_length}; resume with the "
                        "original trainer.max_steps, or start a new run (ckpt_path=null) to train longer"
                    )

    def _time_budget(self) -> float | None:
        """Seconds of ``trainer.max_time`` (Lightning's Timer), if the run has one."""
        timers = [callback for callback in self.trainer.callbacks if isinstance(callback, Timer)]
        if not timers or timers[0].time_remaining() is None:
            return None
        return timers[0].time_elapsed() + timers[0].time_remaining()  # type: ignore[operator]

    def _run_length(self, interval: str) -> int:
        """The run's number of optimiser steps (``interval="step"``) or of epochs."""
        steps = self.trainer.estimated_stepping_batches
        epochs = self.trainer.max_epochs
        if interval == "epoch" and epochs is not None and epochs >= 0:
            return int(epochs)
        if math.isinf(steps):
            raise SegkitError(
                f"{type(self).__name__}: the LR schedule needs the run's length, but it has none (no "
                "trainer.max_steps or max_epochs); set trainer.max_steps, or with trainer.max_time use "
                "model.scheduler._target_=segkit.models.schedules.OneCycleBudgetLR"
            )
        if interval == "step":
            return int(steps)
        return math.ceil(steps / max(1, int(self.trainer.num_training_batches)))

    def _run_length_kwargs(self) -> dict[str, float]:
        """The run's length for a scheduler whose config leaves it out.

        OneCycleLR's ``total_steps`` and CosineAnnealingLR's ``T_max`` are filled with the
        number of optimiser steps (``scheduler_interval: step``) or epochs (``epoch``), so a
        config need not repeat what the trainer and data already say. A scheduler that takes
        ``time_budget_s`` (:class:`segkit.models.schedules.OneCycleBudgetLR`) spans
        ``trainer.max_time`` when the run has no step limit.
        """
        factory = self.scheduler_factory
        given = getattr(factory, "keywords", {})
        params = inspect.signature(getattr(factory, "func", factory)).parameters
        if "time_budget_s" in params and given.get("time_budget_s") is None and given.get("total_steps") is None:
            budget = self._time_budget()
            if budget is not None and math.isinf(self.trainer.estimated_stepping_batches):
                return {"time_budget_s": budget}
        for name in ("total_steps", "T_max"):
            if name in params and given.get(name) is None:
                return {name: self._run_length(self.scheduler_interval)}
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # segkit-eval reads this to pick the class to rebuild (only classes in segkit.models).
        checkpoint["segkit_module"] = f"{type(self).__module__}:{type(self).__qualname__}"
        # The input normalisation the weights expect, for segkit-predict and segkit-export.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is not None and std is not None:
            checkpoint["segkit_normalization"] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
            intensity = getattr(datamodule, "intensity", None)
            if intensity is not None:  # how raw pixels became [0, 1] (data.intensity)
                checkpoint["segkit_normalization"]["intensity"] = intensity.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        #: ``{"mean": [...], "std": [...]}`` of the training data, if the checkpoint has it.
        self.input_normalization = checkpoint.get("segkit_normalization")
