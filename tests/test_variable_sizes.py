"""Images of odd and differing sizes, for every data module that allows them.

Each test builds a data module on odd-size data (a fake VOC tree whose images all differ,
ISBI-like stacks of 45 x 67 pages, synthetic EM slices of 75 px, and the patch data module on
top of both), pulls a training and a validation batch, then fits and validates the matching
tiny model (U-Net, FCN-8s, paper U-Net, patch CNN) for two batches. Validation must score
every labelled pixel of each image: one logit map of the image's own H x W per input, and a
confusion matrix (and, for EM, a pixel error) that counts exactly the val masks' non-ignored
pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from segkit.contracts.fake_data import FAKE_VOC_SPLITS, make_fake_isbi, make_fake_voc

from segkit.data import EMDataModule, ISBI2012DataModule, PatchDataModule, VOCDataModule
from segkit.data.base import SegmentationDataModule
from segkit.data.windows import WindowSampler
from segkit.models import FCNModule, PatchCNNModule, UNetModule, UNetPaperModule
from segkit.models.base import SegmentationModule

# Train images first, then the two val images: all differ, and both val images are odd on both sides.
ODD_VOC_SIZES = ((40, 56), (48, 36), (33, 45), (41, 29), (37, 61))
TRAIN_VOC_SIZES = set(ODD_VOC_SIZES[: len(FAKE_VOC_SPLITS["train"])])
VAL_VOC_SIZES = list(ODD_VOC_SIZES[len(FAKE_VOC_SPLITS["train"]):])
ODD_PAGE = (45, 67)
ODD_EM_SIDE = 75
# The U-Net paper's loss, as experiment=unet_isbi / unet_em train with it.
WEIGHT_MAP = {"name": "weight_map", "object_class": 0, "w0": 10.0, "sigma": 5.0}
VAL_BATCHES = 2


class ValidationRecorder(L.Callback):
    """The input and logit shapes of every validation forward pass, and per validation epoch
    the number of pixels the confusion matrix (and the EM scores, if any) counted."""

    def __init__(self) -> None:
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.confusion_totals: list[int] = []
        self.em_images: list[int] = []
        self._hook: Any = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook = pl_module.register_forward_hook(self._record)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()

    def _record(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...], logits: torch.Tensor) -> None:
        self.shapes.append((tuple(args[0].shape), tuple(logits.shape)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks run before the module's own hook, which resets the metrics.
        assert isinstance(pl_module, SegmentationModule)
        self.confusion_totals.append(int(pl_module.val_metrics.confmat.sum()))
        if pl_module.val_em_metrics is not None:
            self.em_images.append(int(pl_module.val_em_metrics.images))


def fit_and_validate(module: SegmentationModule, dm: SegmentationDataModule) -> tuple[ValidationRecorder, L.Trainer]:
    """Two training batches, one validation epoch in ``fit``, then ``validate``."""
    recorder = ValidationRecorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=VAL_BATCHES,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder],
    )
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    return recorder, trainer


def assert_every_val_pixel_scored(recorder: ValidationRecorder, dm: SegmentationDataModule, num_classes: int,
                                  em: bool = False) -> None:
    """Both validation epochs saw all val images whole, gave logits of their size and counted
    every labelled pixel once (and, for EM, scored V_rand on every image)."""
    batches = list(dm.val_dataloader())
    assert len(batches) <= VAL_BATCHES, "the val set must fit in the limited validation epoch"
    expected_shapes = [(tuple(images.shape), (images.shape[0], num_classes, *images.shape[-2:]))
                       for images, _ in batches]
    assert recorder.shapes == expected_shapes * 2
    labelled = sum(int((masks != dm.ignore_index).sum()) for _, masks in batches)
    assert recorder.confusion_totals == [labelled, labelled]
    if em:  # V_rand over every image (each has cells); the pixel error is the confusion matrix's
        count = sum(images.shape[0] for images, _ in batches)
        assert recorder.em_images == [count, count]


def batch_sizes(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[int, int]]:
    """``(H, W)`` of each single-image batch, after checking image and mask agree."""
    sizes = []
    for images, masks in batches:
        assert images.shape[0] == 1 and images.shape[-2:] == masks.shape[-2:]
        sizes.append(tuple(masks.shape[-2:]))
    return sizes


def odd_voc(tmp_path: Path, **kwargs: Any) -> VOCDataModule:
    return VOCDataModule(root=str(make_fake_voc(tmp_path, sizes=ODD_VOC_SIZES)), num_workers=0, **kwargs)


def tiny_voc_model(name: str, dm: VOCDataModule) -> SegmentationModule:
    if name == "fcn8s":  # the reference FCN's 100-px padding and crops, at 1/16 of the channels
        return FCNModule(num_classes=dm.num_classes, class_names=dm.class_names, arch="fcn8s", width_mult=0.0625)
    return UNetModule(num_classes=dm.num_classes, class_names=dm.class_names, depth=2, base_width=4)


@pytest.mark.parametrize(("model", "crop_size"), [("unet", None), ("unet", 31), ("fcn8s", None)],
                         ids=["unet-whole-images", "unet-odd-crops", "fcn8s-whole-images"])
def test_voc_models_train_and_validate_whole_images_of_odd_differing_sizes(
    tmp_path: Path, model: str, crop_size: int | None
) -> None:
    torch.manual_seed(0)
    dm = odd_voc(tmp_path, crop_size=crop_size, batch_size=1 if crop_size is None else 2)
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    if crop_size is None:  # batch 1 of one whole training image, as the FCN reference trains
        assert images.shape[:2] == (1, 3) and tuple(masks.shape[-2:]) in TRAIN_VOC_SIZES
    else:  # crops padded with the ignore index stack into one batch
        assert images.shape == (2, 3, 31, 31) and masks.shape == (2, 31, 31)
    assert batch_sizes(list(dm.val_dataloader())) == VAL_VOC_SIZES

    recorder, trainer = fit_and_validate(tiny_voc_model(model, dm), dm)
    assert_every_val_pixel_scored(recorder, dm, dm.num_classes)
    assert torch.isfinite(trainer.callback_metrics["val/mIoU"])


def test_isbi_paper_unet_trains_and_tiles_odd_size_pages(tmp_path: Path) -> None:
    torch.manual_seed(0)
    root = make_fake_isbi(tmp_path, pages=5, size=ODD_PAGE)
    dm = ISBI2012DataModule(root=str(root), val_slices=[3, 4], batch_size=1, num_workers=0)
    dm.setup("fit")
    # Augmentation (90-degree turns of a non-square page, elastic warps) keeps the page's size.
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (1, 1, *ODD_PAGE) and masks.shape == (1, *ODD_PAGE)
    assert batch_sizes(list(dm.val_dataloader())) == [ODD_PAGE, ODD_PAGE]

    # Overlap-tile with 20-px output tiles: neither side of the page is a multiple of the tile.
    module = UNetPaperModule(num_classes=2, class_names=dm.class_names, depth=2, base_width=4, dropout=0.0,
                             tile=20, loss=WEIGHT_MAP, data_spec=dm.spec())
    recorder, trainer = fit_and_validate(module, dm)
    assert_every_val_pixel_scored(recorder, dm, 2, em=True)
    assert 0.0 <= float(trainer.callback_metrics["val/pixel_error"]) <= 1.0


@pytest.mark.parametrize("image_size", [ODD_EM_SIDE, (ODD_EM_SIDE, 53)], ids=["75", "75x53"])
def test_em_paper_unet_trains_and_validates_odd_size_slices(image_size: int | tuple[int, int]) -> None:
    torch.manual_seed(0)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    dm = EMDataModule(image_size=image_size, train_size=4, val_size=4, test_size=2, batch_size=2, num_workers=0)
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 1, height, width) and masks.shape == (2, height, width)
    images, masks = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 1, height, width) and masks.shape == (2, height, width)

    # One pass over each mirror-padded slice (tile=None), as experiment=unet_em predicts.
    module = UNetPaperModule(num_classes=2, class_names=dm.class_names, depth=2, base_width=4, dropout=0.0,
                             tile=None, loss=WEIGHT_MAP, data_spec=dm.spec())
    recorder, trainer = fit_and_validate(module, dm)
    assert_every_val_pixel_scored(recorder, dm, 2, em=True)
    assert 0.0 <= float(trainer.callback_metrics["val/pixel_error"]) <= 1.0


@pytest.mark.parametrize("base", ["voc", "em"])
def test_patch_cnn_trains_on_windows_of_odd_size_images_and_scores_them_densely(tmp_path: Path, base: str) -> None:
    torch.manual_seed(0)
    source: SegmentationDataModule
    if base == "voc":  # whole images of differing odd sizes; windows (65 px) larger than the images
        source = odd_voc(tmp_path)
    else:
        source = EMDataModule(image_size=ODD_EM_SIDE, train_size=4, val_size=2, test_size=2, batch_size=2,
                              augment=False, num_workers=0)
    module = PatchCNNModule(num_classes=source.num_classes, in_channels=source.in_channels,
                            class_names=source.class_names, preset="n1", maps=4, hidden=8, data_spec=source.spec())
    dm = PatchDataModule(source, window=module.window, sampler=WindowSampler(windows_per_image=4), batch_size=2, num_workers=0)
    dm.setup("fit")
    windows, labels = next(iter(dm.train_dataloader()))
    assert windows.shape == (8, source.in_channels, 65, 65) and labels.shape == (8,)
    assert (labels != dm.ignore_index).all()
    val_images, val_masks = next(iter(dm.val_dataloader()))
    assert val_images.shape[-2:] == val_masks.shape[-2:]
    if base == "voc":
        assert batch_sizes(list(dm.val_dataloader())) == VAL_VOC_SIZES

    recorder, trainer = fit_and_validate(module, dm)
    assert_every_val_pixel_scored(recorder, dm, dm.num_classes, em=base == "em")
    assert torch.isfinite(trainer.callback_metrics["val/mIoU"])


@pytest.mark.parametrize("size", VAL_VOC_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_patch_training_windows_are_what_the_dense_form_scores_at_odd_sizes(size: tuple[int, int]) -> None:
    # A mask holding each pixel's flat index tells where the sampler cut every window; the
    # net on those windows must equal the dense form at those pixels, even for a 65-px window
    # on a smaller image (mirrored context, repeated).
    torch.manual_seed(0)
    height, width = size
    module = PatchCNNModule(num_classes=3, in_channels=3, preset="n1", maps=4, hidden=8).eval()
    image = torch.randn(1, 3, height, width)
    positions = torch.arange(height * width).view(1, height, width)
    sampler = WindowSampler(windows_per_image=32, balance="none", dihedral=False, ignore_index=-1)
    windows, picked = sampler(image, positions, module.window)
    with torch.no_grad():
        dense = module(image)[0].flatten(1)[:, picked]
        direct = module.net(windows).T
    torch.testing.assert_close(direct, dense, rtol=1e-5, atol=1e-5)
