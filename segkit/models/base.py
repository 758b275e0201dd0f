"""The LightningModule every segkit architecture inherits: loss, metrics, optimiser, logging.

An architecture is a subclass whose ``__init__`` takes its own arguments, passes the rest on
(``super().__init__(num_classes, **kwargs)``) and builds ``self.net``: a plain
``torch.nn.Module`` from :mod:`segkit.nets` mapping ``(N, C_in, H, W)`` images to
``(N, num_classes, H, W)`` logits. The base records every constructor argument of the subclass
as a hyperparameter, so ``load_from_checkpoint(path)`` rebuilds it with no extra arguments.

Example:
    >>> from segkit.nets import UNet
    >>> class TinyUNet(SegmentationModule):
    ...     def __init__(self, num_classes: int, in_channels: int = 3, width: int = 4, **kwargs):
    ...         super().__init__(num_classes, **kwargs)
    ...         self.net = UNet(num_classes, in_channels, depth=2, base_width=width)
    >>> module = TinyUNet(num_classes=2, width=8, ignore_index=0)
    >>> dict(module.hparams)
    {'num_classes': 2, 'class_names': None, 'ignore_index': 0, 'loss': None, 'scheduler_interval': 'epoch', 'in_channels': 3, 'width': 8}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric

from segkit.data.spec import DataSpec
from segkit.errors import SegkitError
from segkit.inference.tta import TestTimeAugmentation
from segkit.models.loss_logging import TRAIN_LOSS, TrainLossLog
from segkit.models.schedule_length import check_resumed_schedulers, run_length_kwargs
from segkit.nets.traceable import Exportable
from segkit.scoring.em_metrics import EMMetrics
from segkit.scoring.losses import build_loss
from segkit.scoring.metrics import SegmentationMetrics

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

# Optimiser and scheduler are Hydra partials (functools.partial objects). They are kept out of
# the checkpoint's hyperparameters so that a checkpoint holds plain data only (loadable with
# weights_only=True); the run's full config, optimiser included, is logged by segkit-train.
NOT_HPARAMS = ("optimizer", "scheduler", "channels_last", "compile", "data_spec")
# The training confusion matrix counts small steps' predictions together, once they reach this
# many logits (512 KiB of float32, which with the counting's intermediates stays in a core's
# L2 cache): a tiny net's steps (8 x 6 x 32 x 32 logits) then took 154-202 us a step to count,
# against 167-261 us one step at a time and 197-213 us at 4x this (2-core CPU, in-run thread
# time, docs/overhead.md); a step of this size or more is counted at once, as before.
TRAIN_METRIC_DEFER_ELEMENTS = 2**17


def check_optimizer(factory: OptimizerFactory | None) -> None:
    """Build the optimiser once on a throwaway parameter: arguments torch refuses (``lr=-1``, an
    unknown keyword) are a one-line error at construction, not a traceback when ``fit`` starts."""
    if factory is None:
        return
    try:
        factory([nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as error:
        name = getattr(getattr(factory, "func", factory), "__name__", type(factory).__name__)
        arguments = ", ".join(f"{key}={value}" for key, value in getattr(factory, "keywords", {}).items())
        message = " ".join(str(error).split())  # one line
        raise SegkitError(f"model.optimizer: {name}({arguments}) refused its arguments: {message}; "
                          "fix them with model.optimizer.<argument>=...") from None
    except RuntimeError:  # e.g. options for the real parameters' device (fused=True), not this CPU one
        pass


class SegmentationModule(L.LightningModule):
    """Training with a configured loss, and confusion-matrix metrics, for any per-pixel classifier.

    Args:
        num_classes: number of classes (logit channels).
        class_names: one name per class, used in the logged keys ``val/IoU/<name>``.
        ignore_index: target value excluded from loss and metrics (PASCAL VOC uses 255).
        loss: the ``model.loss`` node, e.g. ``{"name": "dice"}`` (:func:`segkit.scoring.losses.build_loss`);
            ``None``: cross-entropy averaged over valid pixels.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``); default AdamW(lr=1e-3).
        scheduler: ``optimizer -> LRScheduler`` (a Hydra ``_partial_``) or ``None``.
        scheduler_interval: step the scheduler every ``"epoch"`` or every ``"step"``.
        channels_last: train with the net and its inputs in channels-last memory order (the
            same function; faster on some GPUs and CPUs: ``segkit-bench throughput``).
        compile: train the net through ``torch.compile`` (``nn.Module.compile``: its weights and
            checkpoints unchanged); the first steps of each input size pay for compiling.
        data_spec: what the data declares (:class:`segkit.data.spec.DataSpec`, or its
            ``to_dict()``): normalisation and membrane class beside the arguments above. Stored in
            checkpoints as ``segkit_data``, and restored as :attr:`data_spec` by loading.

    Both are training speed options, not hyperparameters: eval, predict and export rebuild the
    net without them. ``conf/model/unet.yaml`` turns ``channels_last`` on (measured faster on
    CPU); elsewhere add them with ``+model.channels_last=true`` / ``+model.compile=true``.

    With data that asks for the ISBI scores (``data.em_scores: true``: the spec's
    ``membrane_class`` is set), validation and test also log ``pixel_error``, ``v_rand`` and
    ``rand_error`` (:class:`segkit.scoring.em_metrics.EMMetrics`).
    """

    net: nn.Module
    # Constructor arguments not stored as hyperparameters (e.g. where initial weights come from:
    # a reloaded module gets its weights from its own checkpoint).
    not_hparams: ClassVar[tuple[str, ...]] = ()
    # The smallest arguments that keep the architecture's topology: what the per-architecture
    # test contract (tests/test_architecture_contract.py) builds, to run fast.
    contract_size: ClassVar[dict[str, Any]] = {}
    # Import names of optional packages the architecture needs (``segmentation_models_pytorch``):
    # the contract and the tests skip it, rather than fail, where one is not installed.
    requires_packages: ClassVar[tuple[str, ...]] = ()
    # Why a training step reads from the device on purpose (a host-device sync every step on a
    # GPU), or None: the architecture contract checks on PyTorch's meta device that nothing does.
    training_step_host_read: ClassVar[str | None] = None
    # Test-time augmentation of validation and test logits (segkit-eval's inference.tta): a
    # plain attribute, neither a hyperparameter nor saved in checkpoints; None: one plain pass.
    test_time_augmentation: TestTimeAugmentation | None = None

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        loss: Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        compile: bool = False,
        data_spec: DataSpec | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Lightning collects the arguments of every __init__ up the subclass chain (a
        # subclass's **kwargs included); segkit-train logs the whole run config instead.
        self.save_hyperparameters(ignore=[*NOT_HPARAMS, *self.not_hparams], logger=False)
        self.num_classes = num_classes
        self.class_names = list(class_names or [f"class_{i}" for i in range(num_classes)])
        self.ignore_index = ignore_index
        check_optimizer(optimizer)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.channels_last, self.compile_net = channels_last, compile
        self._channels_last_applied = False
        #: The data's declared side of the contract (None: built without one, e.g. in a notebook).
        self.data_spec = DataSpec.from_dict(data_spec) if isinstance(data_spec, Mapping) else data_spec
        self._train_loss_log = TrainLossLog()  # reads the trainer's cadence as each epoch starts
        self.criterion = build_loss(loss, num_classes, ignore_index)
        self.val_em_metrics: EMMetrics | None = None
        self.test_em_metrics: EMMetrics | None = None
        # One confusion-matrix metric per stage, each accumulated over its whole split.
        self.train_metrics, self.val_metrics, self.test_metrics = (
            SegmentationMetrics(num_classes, ignore_index, self.class_names, defer_elements=defer)
            for defer in (TRAIN_METRIC_DEFER_ELEMENTS, 0, 0)
        )
        # A run resumed mid-epoch continues the epoch's training confusion matrix.
        self.train_metrics.persistent(True)
        self.val_miou_best = MaxMetric()
        # Saved in checkpoints, so a resumed run keeps its best-so-far.
        self.val_miou_best.persistent(True)

    def __setattr__(self, name: str, value: object) -> None:
        # Lightning sets _current_fx_name (a str or None) around every hook it calls, about 35
        # times a training step; nn.Module.__setattr__ first rules out a parameter, buffer or
        # submodule (Python-level isinstance checks) and then stores it exactly like this.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._channels_last_applied:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def configure_model(self) -> None:
        """Apply the training speed options to the net (Lightning calls this before fitting);
        until then the module computes exactly what one without them does."""
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
            self._channels_last_applied = True
        if self.compile_net and getattr(self.net, "_compiled_call_impl", None) is None:  # not twice
            self.net.compile()

    def attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this module, or ``None`` outside one (Lightning's ``trainer``
        property raises then)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def exportable(self) -> Exportable:
        """A plain module that computes ``self(images)`` and traces (for ONNX / TorchScript) at
        any size: the net itself unless a subclass says otherwise (:mod:`segkit.nets.traceable`)."""
        return Exportable(self.net, 1, f"{type(self.net).__name__} as trained")

    def setup(self, stage: str) -> None:
        membrane_class = self.data_spec.membrane_class if self.data_spec is not None else None
        if membrane_class is not None and self.num_classes == 2 and self.val_em_metrics is None:
            self.val_em_metrics = EMMetrics(membrane_class, self.ignore_index).to(self.device)
            self.test_em_metrics = EMMetrics(membrane_class, self.ignore_index).to(self.device)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """The configured loss (``model.loss``); ``instances`` are the objects' ids when the data
        gives them (``data.mask_type=instances``), for the U-Net weight map."""
        return self.criterion(logits, masks, instances=instances)

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
        self.train_metrics.update(logits, masks)  # detached and counted every few small steps
        self._log_train_loss(loss, batch_idx, logits.shape[0])
        return loss

    def _log_train_loss(self, loss: torch.Tensor, batch_idx: int, batch_size: int) -> None:
        # To the loggers every trainer.log_every_n_steps, as self.log every step would (segkit/models/loss_logging.py).
        self._train_loss_log.log(self, loss, batch_idx, batch_size)

    def on_train_epoch_start(self) -> None:
        self._train_loss_log.read_cadence(self.trainer)

    def on_train_epoch_end(self) -> None:
        scores = self.train_metrics.compute()
        self.log_dict({"train/mIoU": scores["mIoU"], "train/pixel_acc": scores["pixel_acc"]})
        self.train_metrics.reset()

    def evaluation_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Validation and test logits: ``self(images)`` (each architecture's evaluation forward:
        overlap-tile, the dense patch CNN, ...), averaged over the views of
        :attr:`test_time_augmentation` when it is set."""
        if self.test_time_augmentation is None:
            return self(images)
        return self.test_time_augmentation(self, images)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: SegmentationMetrics,
                  stage: str) -> dict[str, torch.Tensor]:
        images, masks = batch
        logits = self.evaluation_logits(images)
        # max(...).indices, not argmax: same first-max tie rule, faster on CPU over dim 1.
        preds = logits.detach().max(dim=1).indices
        metrics.update(preds, masks)
        em_metrics = self.val_em_metrics if stage == "val" else self.test_em_metrics
        if em_metrics is not None:
            em_metrics.update(preds, masks)
        self.log(f"{stage}/loss", self.loss(logits, masks), batch_size=images.shape[0], sync_dist=True)
        return {"preds": preds, "masks": masks, "logits": logits.detach()}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Scores the batch; returns ``{"preds", "masks", "logits"}`` (``(N, H, W)`` class indices
        and targets, ``(N, K, H, W)`` logits, on the module's device) for callbacks such as
        :class:`segkit.training.per_image.PerImageScores` and
        :class:`segkit.training.object_scores.ObjectScores`."""
        return self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """As :meth:`validation_step`, on the test split."""
        return self._evaluate(batch, self.test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        logged = self.val_metrics.as_log_dict("val")
        self.val_metrics.reset()
        # The sanity check runs a couple of batches on an untrained net: not a "best".
        if not self.trainer.sanity_checking:
            self.val_miou_best.update(logged["val/mIoU"])
            logged["val/mIoU_best"] = self.val_miou_best.compute()
        self.log("val/mIoU", logged.pop("val/mIoU"), prog_bar=True)
        self.log_dict(self._with_em_scores(logged, self.val_em_metrics, "val"))

    def on_test_epoch_end(self) -> None:
        logged = self.test_metrics.as_log_dict("test")
        self.test_metrics.reset()
        self.log_dict(self._with_em_scores(logged, self.test_em_metrics, "test"))

    @staticmethod
    def _with_em_scores(logged: dict[str, Any], metrics: EMMetrics | None, stage: str) -> dict[str, Any]:
        """``logged`` plus the ISBI scores when the data asks for them: the pixel error from the
        confusion matrix (``1 - pixel_acc``), V_rand and the Rand error from ``metrics``."""
        if metrics is None:
            return logged
        scores = {f"{stage}/{name}": value.float() for name, value in metrics.compute().items()}
        metrics.reset()
        return {**logged, f"{stage}/pixel_error": 1.0 - logged[f"{stage}/pixel_acc"], **scores}

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
        scheduler = self.scheduler_factory(optimizer, **run_length_kwargs(
            self.trainer, self.scheduler_factory, self.scheduler_interval, type(self).__name__))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def on_train_start(self) -> None:
        check_resumed_schedulers(self.trainer, type(self).__name__)
        # As training starts too: Lightning skips on_train_epoch_start when resuming mid-epoch.
        self._train_loss_log.read_cadence(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # segkit-eval reads this to pick the class to rebuild (segkit's and its plugins' only).
        checkpoint["segkit_module"] = f"{type(self).__module__}:{type(self).__qualname__}"
        # What the data declared (normalisation included), for segkit-eval, -predict and -export.
        if self.data_spec is not None:
            checkpoint["segkit_data"] = self.data_spec.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get("segkit_data")
        if stored is not None:
            self.data_spec = DataSpec.from_dict(stored)
            return
        # Written before segkit_data: the classes from the hyperparameters, the statistics from
        # segkit_normalization when present.
        old = checkpoint.get("segkit_normalization") or {}
        self.data_spec = DataSpec.of(
            self.num_classes, self.class_names, int(self.hparams.get("in_channels", 3)), self.ignore_index,
            old.get("mean"), old.get("std"), old.get("intensity"))

    def input_normalization(self) -> dict[str, Any]:
        """``{"mean", "std"[, "intensity"]}`` the weights expect (:meth:`DataSpec.normalization`),
        ``{}`` when unknown."""
        return self.data_spec.normalization() if self.data_spec is not None else {}
