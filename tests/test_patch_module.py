"""PatchCNNModule and PatchDataModule: windows for training, the dense form for evaluation."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from segkit.data import PatchDataModule, ShapesDataModule
from segkit.data.windows import WindowSampler
from segkit.errors import SegkitError
from segkit.models import PatchCNNModule
from segkit.nets import naive_window_scores
from segkit.scoring.metrics import SegmentationMetrics


def tiny_shapes() -> ShapesDataModule:
    return ShapesDataModule(image_size=24, train_size=8, val_size=4, test_size=4, batch_size=2, num_workers=0)


def quiet_trainer(**kwargs: object) -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", **kwargs)


def test_patch_data_takes_the_models_window_and_sampler_and_keeps_whole_images_for_evaluation() -> None:
    module = PatchCNNModule(num_classes=6, in_channels=3, preset="n1", maps=4, hidden=8, windows_per_image=5)
    dm = PatchDataModule(tiny_shapes(), batch_size=2, num_workers=0)
    trainer = quiet_trainer(max_epochs=1)
    trainer.strategy.connect(module)
    dm.trainer = trainer
    dm.setup("fit")
    windows, labels = next(iter(dm.train_dataloader()))
    assert windows.shape == (10, 3, 65, 65) and labels.shape == (10,)
    images, masks = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 24, 24) and masks.shape == (2, 24, 24)
    assert (dm.num_classes, dm.in_channels, list(dm.mean)) == (6, 3, [0.5, 0.5, 0.5])


def test_patch_data_without_a_window_is_a_clear_error() -> None:
    with pytest.raises(SegkitError, match="data.window"):
        PatchDataModule(tiny_shapes(), num_workers=0).setup("fit")


@pytest.mark.parametrize("wrapped", [True, False], ids=["patch-data", "whole-image-data"])
def test_training_on_windows_lowers_the_loss_and_validation_is_dense(wrapped: bool) -> None:
    torch.manual_seed(0)
    module = PatchCNNModule(num_classes=6, in_channels=3, preset="n1", maps=8, hidden=16, activation="relu",
                            windows_per_image=16, dihedral=False,
                            optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    shapes = tiny_shapes()
    dm = PatchDataModule(shapes, window=65, sampler=module.sampler, batch_size=2, num_workers=0) if wrapped else shapes
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # the same batch, over and over
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    losses = []
    for _ in range(30):
        logits, targets = module.training_logits(batch)
        assert logits.shape[1:] == (6, 1, 1) and targets.shape[1:] == (1, 1)
        loss = module.loss(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]

    # Validation scores whole images with the dense form: exactly the naive window scores.
    images, _ = next(iter(dm.val_dataloader()))
    module.eval()
    with torch.no_grad():
        dense = module(images)
    assert dense.shape == (2, 6, 24, 24)
    # Float32 sums in another order: after overfitting, logits reach ~20-100, and near-zero ones
    # differ by up to ~2e-5 (measured 1.7e-5), so an absolute floor of 1e-4.
    assert torch.allclose(dense[0], naive_window_scores(module.net, images[0]), rtol=1e-5, atol=1e-4)


def test_fit_logs_val_miou_from_dense_whole_image_predictions() -> None:
    torch.manual_seed(0)
    module = PatchCNNModule(num_classes=6, in_channels=3, preset="n1", maps=4, hidden=8)
    dm = PatchDataModule(tiny_shapes(), sampler=WindowSampler(windows_per_image=4), batch_size=2, num_workers=0)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(module, datamodule=dm)
    # Recompute the val mIoU from dense predictions of the whole validation images.
    metrics = SegmentationMetrics(6, 255)
    module.eval()
    with torch.no_grad():
        for images, masks in dm.val_dataloader():
            metrics.update(module(images), masks)
    assert float(trainer.callback_metrics["val/mIoU"]) == pytest.approx(float(metrics.compute()["mIoU"]), abs=1e-6)


def test_patches_without_a_window_need_a_model_that_declares_one() -> None:
    import lightning as L

    from segkit.data import PatchDataModule, ShapesDataModule
    from segkit.errors import SegkitError
    from segkit.models.patch_cnn import PatchCNNModule
    from segkit.models.unet import UNetModule

    def setup_with(model: L.LightningModule) -> PatchDataModule:
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer.strategy.connect(model)
        data = PatchDataModule(ShapesDataModule(train_size=2, val_size=2, test_size=2, num_workers=0), num_workers=0)
        data.trainer = trainer
        data.setup("fit")
        return data

    patch_cnn = PatchCNNModule(num_classes=6, preset="n1", maps=4, hidden=8)
    assert setup_with(patch_cnn).window == patch_cnn.window == 65
    with pytest.raises(SegkitError, match=r"data.window=null: the model \(UNetModule\) declares no window size"):
        setup_with(UNetModule(num_classes=6, depth=2, base_width=4))
