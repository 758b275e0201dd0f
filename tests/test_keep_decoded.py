"""``data.keep_decoded``: a small data set is decoded once and kept in memory, with exactly the
samples (and so exactly the training) that decoding every time gives."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from user_data import write_nuclei_folder

import segkit.data.modules.folder as folder
import segkit.data.files.pairs as pairs
from segkit.data import FolderDataModule
from segkit.errors import SegkitError
from segkit.models import UNetModule

tifffile = pytest.importorskip("tifffile")


def _module(root: Path, keep_decoded: bool | str, validate: str = "full") -> FolderDataModule:
    dm = FolderDataModule(root=str(root), num_classes=2, in_channels=1, mask_type="instances", crop_size=32,
                          batch_size=2, num_workers=0, keep_decoded=keep_decoded, validate=validate)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nuclei_folder(tmp_path_factory.mktemp("kd") / "nuclei")


def test_each_pair_is_decoded_once_and_its_samples_are_unchanged(nuclei: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[Path] = []
    real = pairs.load_pair
    monkeypatch.setattr(pairs, "load_pair", lambda pair, *a: decoded.append(pair[0]) or real(pair, *a))
    kept, fresh = _module(nuclei, True).train_set, _module(nuclei, False).train_set
    for _ in range(3):  # the random crops and flips differ by epoch; the pixels under them may not
        for index in range(len(kept)):
            for a, b in zip(kept.load(index), fresh.load(index)):
                assert torch.equal(a, b)
            kept[index][2].fill_(7)  # what a caller does to a sample cannot reach the kept arrays
    assert len([p for p in decoded if p in [pair[0] for pair in kept.pairs]]) == len(kept) + 3 * len(fresh)


def test_training_is_identical_with_and_without_it(nuclei: Path) -> None:
    weights = []
    for keep in (True, False):
        L.seed_everything(0, workers=True)
        dm = _module(nuclei, keep)
        module = UNetModule(num_classes=2, in_channels=1, depth=2, base_width=4, loss={"name": "weight_map", "object_class": 1})
        trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, datamodule=dm)
        weights.append(module.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_auto_keeps_small_splits_within_the_limit_only(nuclei: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dm = _module(nuclei, "auto")
    assert dm.train_set.keep_decoded and dm.val_set.keep_decoded
    assert not _module(nuclei, "auto", validate="lazy").train_set.keep_decoded  # sizes unknown
    monkeypatch.setattr(folder, "KEEP_DECODED_LIMIT_BYTES", 1000)
    assert not _module(nuclei, "auto").train_set.keep_decoded


def test_a_bad_value_is_refused_in_one_line(nuclei: Path) -> None:
    with pytest.raises(SegkitError, match=r"data.keep_decoded='sometimes': use auto, true or false"):
        _module(nuclei, "sometimes")
