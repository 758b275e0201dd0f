"""The LightningModule: checkpoints that rebuild themselves, and the metrics it logs."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import CliRun, InProcessRun

from segkit.data import ShapesDataModule
from segkit.data.synthetic.shapes_render import SHAPES_CLASS_NAMES
from segkit.errors import SegkitError
from segkit.models import SegmentationModule, UNetModule

SCORES = ("mIoU", "mDice", "pixel_acc", "mean_acc", "fwIoU")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[UNetModule, Path]:
    """A UNetModule fitted for a few steps (so batch-norm statistics moved) and its checkpoint."""
    torch.manual_seed(0)
    datamodule = ShapesDataModule(train_size=8, val_size=4, test_size=4, image_size=32,
                                  batch_size=4, num_workers=0)
    module = UNetModule(
        num_classes=datamodule.num_classes,
        class_names=list(datamodule.class_names),
        depth=2,
        base_width=4,
        upsampling="bilinear",
        dropout=0.1,
        loss={"name": "cross_entropy", "reduction": "sum"},
        optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9),
    )
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path_factory.mktemp("module_ckpt") / "module.ckpt"
    trainer.save_checkpoint(path)
    return module, path


def assert_same_model(original: SegmentationModule, loaded: SegmentationModule) -> None:
    assert type(loaded) is type(original)
    assert loaded.hparams == original.hparams
    assert loaded.class_names == original.class_names
    original_state, loaded_state = original.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for key, value in original_state.items():
        assert torch.equal(value.cpu(), loaded_state[key].cpu()), key
    images = torch.randn(2, 3, 29, 35, generator=torch.Generator().manual_seed(1))
    original.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), original(images), rtol=0, atol=0)


def test_load_from_checkpoint_without_arguments_rebuilds_the_same_model(fitted) -> None:
    module, path = fitted
    assert_same_model(module, UNetModule.load_from_checkpoint(path))


def test_load_from_checkpoint_works_with_weights_only(fitted) -> None:
    module, path = fitted
    assert_same_model(module, UNetModule.load_from_checkpoint(path, weights_only=True))


def test_checkpoint_names_its_module_and_holds_only_plain_hyperparameters(fitted) -> None:
    _, path = fitted
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["segkit_module"] == "segkit.models.unet:UNetModule"
    hparams = checkpoint["hyper_parameters"]
    assert "optimizer" not in hparams and "scheduler" not in hparams
    assert hparams["upsampling"] == "bilinear" and hparams["base_width"] == 4
    assert hparams["class_names"] == list(SHAPES_CLASS_NAMES)


def test_the_cli_checkpoint_reloads_with_weights_only(cli_run: CliRun) -> None:
    checkpoint = torch.load(cli_run.last_ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["segkit_module"] == "segkit.models.unet:UNetModule"
    loaded = UNetModule.load_from_checkpoint(cli_run.last_ckpt, weights_only=True)
    assert loaded.class_names == list(SHAPES_CLASS_NAMES)
    assert loaded.hparams["base_width"] == 8
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_fit_logs_train_loss_and_every_val_score(inprocess_run: InProcessRun) -> None:
    metrics = inprocess_run.metrics
    expected = {"train/loss", "val/mIoU_best"}
    expected |= {f"val/{score}" for score in SCORES}
    expected |= {f"val/{per_class}/{name}" for name in SHAPES_CLASS_NAMES for per_class in ("IoU", "Dice")}
    missing = expected - set(metrics)
    assert not missing, f"not logged: {sorted(missing)}"
    assert 0.0 <= metrics["val/mIoU"] <= metrics["val/mIoU_best"] + 1e-6 <= 1.0 + 1e-6


def test_test_logs_every_score_under_test(inprocess_run: InProcessRun) -> None:
    metrics = inprocess_run.metrics
    expected = {f"test/{score}" for score in SCORES}
    expected |= {f"test/IoU/{name}" for name in SHAPES_CLASS_NAMES}
    missing = expected - set(metrics)
    assert not missing, f"not logged: {sorted(missing)}"


def test_logged_miou_is_the_nan_mean_of_the_logged_class_ious(inprocess_run: InProcessRun) -> None:
    metrics = inprocess_run.metrics
    for stage in ("val", "test"):
        ious = torch.tensor([metrics[f"{stage}/IoU/{name}"] for name in SHAPES_CLASS_NAMES])
        assert metrics[f"{stage}/mIoU"] == pytest.approx(ious.nanmean().item(), abs=1e-6)


def test_an_invalid_loss_is_a_one_line_error_naming_the_config_key() -> None:
    with pytest.raises(SegkitError, match=r"model.loss \(name=cross_entropy\): reduction must be 'mean' or 'sum'"):
        UNetModule(num_classes=3, loss={"name": "cross_entropy", "reduction": "none"})
    with pytest.raises(SegkitError, match="model.loss.name=dyce: choose one of cross_entropy, weight_map, dice, focal, sum"):
        UNetModule(num_classes=3, loss={"name": "dyce"})


def test_loss_ignores_the_ignore_index() -> None:
    module = UNetModule(num_classes=2, depth=1, base_width=2)
    logits = torch.tensor([[[[5.0, 0.0]], [[0.0, 5.0]]]])  # (1, 2, 1, 2): predicts [0, 1]
    right = module.loss(logits, torch.tensor([[[0, 1]]]))
    one_wrong = module.loss(logits, torch.tensor([[[0, 0]]]))
    wrong_one_ignored = module.loss(logits, torch.tensor([[[0, 255]]]))
    assert one_wrong.item() > right.item()
    # The mean is over valid pixels only: ignoring the wrong pixel leaves the right one's loss.
    assert wrong_one_ignored.item() == pytest.approx(right.item())


def test_scheduler_length_is_filled_from_the_run(tmp_path: Path) -> None:
    # OneCycleLR needs total_steps; the config leaves it out and the module fills it in.
    datamodule = ShapesDataModule(train_size=8, val_size=4, test_size=4, image_size=16,
                                  batch_size=4, num_workers=0)
    module = UNetModule(
        num_classes=datamodule.num_classes, depth=1, base_width=2,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        scheduler=functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3),
        scheduler_interval="step",
    )
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == 3 * 2  # 3 epochs x 2 batches of 4


class _LogsLossEveryStep(UNetModule):
    """The module as it was: ``self.log`` of the loss on every step."""

    def _log_train_loss(self, loss: torch.Tensor, batch_idx: int, batch_size: int) -> None:
        self.log("train/loss", loss, batch_size=batch_size)


class _CallbackMetrics(L.Callback):
    """``trainer.callback_metrics["train/loss"]`` after every batch, by the steps taken."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self.seen[trainer.global_step] = float(loss)


def _logged_losses(module_class: type[UNetModule], root: Path) -> tuple[dict[int, float], list[dict[str, str]], dict[int, float]]:
    """A 23-step fit over epochs of 9 batches, written every 5 steps: the TensorBoard
    ``train/loss`` by step, the CSV logger's rows and what callbacks saw in callback_metrics."""
    import csv

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    datamodule = ShapesDataModule(train_size=36, val_size=4, test_size=4, image_size=32, batch_size=4, num_workers=0)
    module = module_class(num_classes=datamodule.num_classes, depth=2, base_width=4)
    seen = _CallbackMetrics()
    trainer = L.Trainer(max_steps=23, accelerator="cpu", devices=1, log_every_n_steps=5, limit_val_batches=0,
                        logger=[TensorBoardLogger(root, name="", version=""), CSVLogger(root, name="", version="")],
                        callbacks=[seen], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    events = EventAccumulator(str(root))
    events.Reload()
    with open(root / "metrics.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    return {event.step: event.value for event in events.Scalars("train/loss")}, rows, seen.seen


def test_train_loss_reaches_the_loggers_and_callbacks_as_logging_every_step_would(tmp_path: Path) -> None:
    # 23 steps over epochs of 9 batches: the written steps cross epoch boundaries.
    sparse, sparse_rows, sparse_seen = _logged_losses(UNetModule, tmp_path / "sparse")
    every, every_rows, every_seen = _logged_losses(_LogsLossEveryStep, tmp_path / "every")
    assert sorted(sparse) == sorted(every) == [4, 9, 14, 19]
    assert sparse == pytest.approx(every, rel=1e-6)
    # The same CSV rows: step, epoch and loss on the written steps, the epochs' train scores.
    assert [row.keys() for row in sparse_rows] == [row.keys() for row in every_rows]
    assert [(row["step"], row["epoch"]) for row in sparse_rows] == [(row["step"], row["epoch"]) for row in every_rows]
    for ours, theirs in zip(sparse_rows, every_rows):
        assert {k: float(v) for k, v in ours.items() if v} == pytest.approx({k: float(v) for k, v in theirs.items() if v})
    # Callbacks see the loss of the last written step, or of an epoch's last batch (steps 8 and 17),
    # which is what self.log every step puts in callback_metrics one step after it.
    logged = sorted({*sparse, 8, 17})
    for taken, loss in sparse_seen.items():
        latest = max(step for step in logged if step < taken)
        assert loss == pytest.approx(every_seen[latest + 1]), taken
    assert set(sparse_seen) == {taken for taken in every_seen if taken > 4}  # from the first written step on
    assert set(sparse_seen) >= {5, 9, 10, 15, 18, 20, 23}


class _CountsEveryStep(UNetModule):
    """The module as it was: the training confusion matrix counted at every step."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.train_metrics.defer_elements = 0


class _SaveMidEpoch(L.Callback):
    """A checkpoint after the step ``at``, and how many training batches the metric held then."""

    def __init__(self, path: Path, at: int) -> None:
        self.path, self.at, self.held = path, at, -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.at:
            self.held = len(pl_module.train_metrics._held)  # type: ignore[union-attr]
            trainer.save_checkpoint(self.path)


def _train_confusion(module_class: type[UNetModule], root: Path) -> tuple[torch.Tensor, list[dict[str, str]], int]:
    """Epochs of 9 batches of 32-px images, a checkpoint after step 14 (mid-epoch): the
    checkpoint's training confusion matrix, the CSV rows and how many batches were held."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    datamodule = ShapesDataModule(train_size=36, val_size=4, test_size=4, image_size=32, batch_size=4, num_workers=0)
    module = module_class(num_classes=datamodule.num_classes, depth=2, base_width=4)
    save = _SaveMidEpoch(root / "mid.ckpt", at=14)
    trainer = L.Trainer(max_steps=20, accelerator="cpu", devices=1, limit_val_batches=0,
                        logger=CSVLogger(root, name="", version=""), callbacks=[save], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    with open(root / "metrics.csv", newline="") as table:
        rows = [row for row in csv.DictReader(table) if row.get("train/mIoU")]
    checkpoint = torch.load(save.path, weights_only=True)
    return checkpoint["state_dict"]["train_metrics.confmat"], rows, save.held


def test_the_training_confusion_matrix_held_over_steps_is_the_one_counted_every_step(tmp_path: Path) -> None:
    # The module counts small training batches together, every few steps: the epoch's scores and
    # a checkpoint taken while batches are held (exact resume) must be those of counting each step.
    held_matrix, held_rows, held = _train_confusion(UNetModule, tmp_path / "held")
    every_matrix, every_rows, _ = _train_confusion(_CountsEveryStep, tmp_path / "every")
    assert held > 0, "the checkpoint came while batches were held"
    assert torch.equal(held_matrix, every_matrix) and held_matrix.sum() > 0
    assert len(held_rows) == 3 and held_rows == every_rows  # train/mIoU and pixel_acc of all three epochs
