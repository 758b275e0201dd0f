"""The data -> model contract: a DataSpec made by the data module, passed to the model when it is
built, kept in its checkpoints, and read back from there (older checkpoints included)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from segkit.data import EMDataModule, ShapesDataModule
from segkit.data.spec import DataSpec
from segkit.errors import SegkitError
from segkit.models.loading import load_module
from segkit.models.unet import UNetModule


def save(module: L.LightningModule, path: Path) -> Path:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def test_the_membrane_class_of_the_spec_turns_on_the_isbi_scores() -> None:
    spec = EMDataModule(image_size=32, train_size=2, val_size=2, test_size=2, num_workers=0).spec()
    assert spec.membrane_class is not None
    with_scores = UNetModule(**spec.model_arguments(), depth=2, base_width=4, data_spec=spec)
    without = UNetModule(**spec.model_arguments(), depth=2, base_width=4)
    with_scores.setup("fit"), without.setup("fit")
    assert with_scores.val_em_metrics is not None and without.val_em_metrics is None


def test_a_checkpoint_written_before_the_spec_still_gives_one(tmp_path: Path) -> None:
    spec = ShapesDataModule().spec()
    path = save(UNetModule(**spec.model_arguments(), depth=2, base_width=4, data_spec=spec), tmp_path / "new.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["segkit_data"]  # as written by segkit before DataSpec
    checkpoint["segkit_normalization"] = {"mean": [0.4] * 3, "std": [0.2] * 3}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    restored = load_module(str(tmp_path / "old.ckpt")).data_spec
    assert restored.class_names == spec.class_names and restored.in_channels == 3
    assert (restored.mean, restored.std) == ((0.4,) * 3, (0.2,) * 3)


def test_an_inconsistent_spec_is_refused_in_one_line() -> None:
    with pytest.raises(SegkitError, match="num_classes=3 but 2 class names"):
        DataSpec.of(3, ["a", "b"], 1)
    with pytest.raises(SegkitError, match=r"data.mean=\[0.5\]: 1 values for in_channels=3"):
        DataSpec.of(2, None, 3, mean=[0.5], std=[0.25, 0.25, 0.25])
    with pytest.raises(SegkitError, match="unknown entries \\['colour_space'\\]"):
        DataSpec.from_dict({**DataSpec.of(2, None, 1).to_dict(), "colour_space": "lab"})
