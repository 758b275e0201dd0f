"""The contract every data module keeps, for each data config (``data/*.yaml``) of segkit and of
installed plugins: ``pytest --pyargs segkit.contracts -k <data>``.

A data module is built from its own config, made tiny by its class's ``contract_config`` (which
writes any files it reads into a temporary folder), and must
- declare its :class:`~segkit.data.spec.DataSpec` before ``setup``, as plain data that survives
  a checkpoint (models are built from it, eval, predict and export read it back),
- serve training batches, and whole validation and test images, that match the spec: float
  images of ``in_channels``, int64 masks of class indices or ``ignore_index``,
- name every evaluated sample (``per_image.csv``),
- give the same first training batch for the same seed (exact resume relies on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from segkit.contracts.configs import compose_config, config_options
from segkit.data.base import SegmentationDataModule
from segkit.data.spec import DataSpec
from segkit.models.loading import load_module
from segkit.models.unet import UNetModule
from segkit.scoring.per_image import sample_name

DATA = config_options("data")


def build(name: str, directory: Path) -> SegmentationDataModule:
    """The data module as ``data=<name>`` builds it, with its class's contract values merged in."""
    cfg = compose_config("train", [f"data={name}"]).data
    cls = get_class(cfg._target_)
    assert issubclass(cls, SegmentationDataModule), f"data={name}: {cls} is not a SegmentationDataModule"
    contract = OmegaConf.create(cls.contract_config(directory))
    return instantiate(OmegaConf.merge(cfg, contract), _convert_="all")


def assert_matches_spec(images: torch.Tensor, masks: torch.Tensor, spec: DataSpec, where: str) -> None:
    assert images.dtype == torch.float32 and images.ndim == 4, (where, images.dtype, images.shape)
    assert images.shape[1] == spec.in_channels, (where, images.shape)
    assert torch.isfinite(images).all(), where
    assert masks.dtype == torch.int64 and masks.shape[0] == images.shape[0], (where, masks.dtype, masks.shape)
    # Whole-image masks, or one centre label per window (data=patches).
    assert masks.shape[1:] in (images.shape[2:], torch.Size()), (where, images.shape, masks.shape)
    valid = (masks >= 0) & (masks < spec.num_classes) | (masks == spec.ignore_index)
    assert valid.all(), f"{where}: mask values {masks.unique().tolist()} outside 0..{spec.num_classes - 1}"


@pytest.mark.parametrize("data", DATA)
def test_the_spec_is_declared_before_setup_as_plain_data(data: str, tmp_path: Path) -> None:
    spec = build(data, tmp_path).spec()
    assert isinstance(spec, DataSpec)
    assert DataSpec.from_dict(spec.to_dict()) == spec
    assert len(spec.class_names) == spec.num_classes >= 2
    for stats in (spec.mean, spec.std):
        assert stats is None or len(stats) == spec.in_channels


@pytest.mark.parametrize("data", DATA)
def test_every_batch_matches_the_spec(data: str, tmp_path: Path) -> None:
    module = build(data, tmp_path)
    spec = module.spec()
    module.setup("fit")
    images, masks, *_ = next(iter(module.train_dataloader()))
    assert_matches_spec(images, masks, spec, f"data={data} train")
    module.setup("test")
    for stage, loader in (("val", module.val_dataloader()), ("test", module.test_dataloader())):
        seen = 0
        for images, masks, *_ in loader:
            assert masks.shape[1:] == images.shape[2:], f"data={data} {stage}: evaluation serves whole images"
            assert_matches_spec(images, masks, spec, f"data={data} {stage}")
            seen += images.shape[0]
        assert seen > 0, f"data={data}: an empty {stage} split"
        names = [sample_name(loader.dataset, index) for index in range(seen)]
        assert all(isinstance(name, str) and name for name in names)
        assert len(set(names)) == len(names), f"data={data} {stage}: samples share names {names}"


@pytest.mark.parametrize("data", DATA)
def test_a_model_built_from_the_spec_keeps_it_in_its_checkpoint(data: str, tmp_path: Path) -> None:
    spec = build(data, tmp_path).spec()
    model = UNetModule(**spec.model_arguments(), depth=2, base_width=4, data_spec=spec.to_dict())
    with torch.no_grad():
        logits = model(torch.randn(1, spec.in_channels, 36, 44))
    assert logits.shape == (1, spec.num_classes, 36, 44)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    assert load_module(str(tmp_path / "model.ckpt")).data_spec == spec


@pytest.mark.parametrize("data", DATA)
def test_the_same_seed_gives_the_same_first_training_batch(data: str, tmp_path: Path) -> None:
    def first_batch(directory: Path) -> list[Any]:
        L.seed_everything(0)
        module = build(data, directory)
        module.setup("fit")
        return list(next(iter(module.train_dataloader())))

    first, second = first_batch(tmp_path / "a"), first_batch(tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
