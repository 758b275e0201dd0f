"""Training control as config: early stopping (``callbacks/early_stopping``) and an EMA of the
weights (``callbacks/ema``). Their exact resume is in tests/resume_matrix.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import CPU, TINY_DATA, task_config
from omegaconf import OmegaConf

from segkit.benchmarks.userdata import write_folder_dataset, write_nuclei_dataset
from segkit.cli.eval import evaluate
from segkit.errors import SegkitError
from segkit.models.loading import load_module
from segkit.training import weight_averaging
from segkit.training.run import train

# As tests/helpers.py's CLI run: a constant lr high enough for the weights to change from step to step.
RUN = [*TINY_DATA, "model.base_width=8", "model.depth=2", *CPU, "model.optimizer.lr=0.02", "model.scheduler=null",
       "callbacks.progress_bar=null"]


def _trained(tmp_path: Path, *overrides: str) -> tuple[dict[str, float], Path]:
    return _train_and_save_config(tmp_path, [*RUN, *overrides]), tmp_path / "run"


def _train_and_save_config(tmp_path: Path, overrides: list[str]) -> dict[str, float]:
    """Train in ``tmp_path/run`` and save its config there, as Hydra does (segkit-eval reads its data config)."""
    run_dir = tmp_path / "run"
    cfg = task_config("train", [*overrides, f"paths.root_dir={tmp_path}"], run_dir)
    metrics = train(cfg)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return metrics


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], Path]:
    """Three epochs with an EMA of decay 0.9 (about the last 10 steps)."""
    return _trained(tmp_path_factory.mktemp("ema"), "callbacks=[default,ema]", "callbacks.ema.decay=0.9",
                    "trainer.max_epochs=3")


def _float_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if value.is_floating_point()}


def test_checkpoints_hold_the_average_as_weights_and_the_raw_weights_beside(ema_run) -> None:
    _, run_dir = ema_run
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        averaged, raw = _float_tensors(checkpoint["state_dict"]), _float_tensors(checkpoint["current_model_state"])
        assert averaged.keys() == raw.keys()
        assert any(not torch.equal(averaged[key], raw[key]) for key in averaged), path.name
        # What segkit-eval, -predict and -export load (segkit.models.loading) is the average.
        loaded = load_module(str(path)).state_dict()
        assert all(torch.equal(loaded[key], averaged[key]) for key in averaged), path.name


def test_validation_and_the_final_test_score_the_average(ema_run, tmp_path: Path) -> None:
    metrics, run_dir = ema_run
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    # segkit-train tests its best checkpoint: the same score as evaluating that checkpoint's
    # average (Lightning's callback would have tested its raw weights).
    tested = evaluate(task_config("eval", [f"ckpt_path={best}", "split=test", *CPU], tmp_path / "test"))
    for score in ("loss", "mIoU"):
        assert tested["test"][score] == pytest.approx(metrics[f"test/{score}"], abs=1e-6), score
    # The last validation scored the weights last.ckpt holds as its state_dict.
    validated = evaluate(task_config("eval", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *CPU],
                                     tmp_path / "val"))
    for score in ("loss", "mIoU"):
        assert validated["val"][score] == pytest.approx(metrics[f"val/{score}"], abs=1e-6), score
    # ... and not the raw weights, whose loss differs (after a dozen steps both may predict
    # background everywhere, so an mIoU need not).
    copy = shutil.copytree(run_dir, tmp_path / "copy")  # beside its run's config, as eval needs
    last = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)
    last["state_dict"] = last.pop("current_model_state")
    torch.save(last, copy / "checkpoints" / "raw.ckpt")
    raw = evaluate(task_config("eval", [f"ckpt_path={copy / 'checkpoints' / 'raw.ckpt'}", *CPU], tmp_path / "raw"))
    assert raw["val"]["loss"] != pytest.approx(metrics["val/loss"], rel=1e-3)


@pytest.mark.parametrize(("cadence", "validations_per_epoch"), [
    ("++trainer.val_check_interval=0.5", 2),
    ("++trainer.check_val_every_n_epoch=2", 0.5),
])
def test_early_stopping_counts_patience_in_validations(tmp_path: Path, cadence: str,
                                                       validations_per_epoch: float) -> None:
    # No validation beats the first by min_delta=1: patience 2 stops the run at its third
    # validation, however many epochs that is.
    _, run_dir = _trained(tmp_path, "callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=2",
                          "callbacks.early_stopping.min_delta=1.0", cadence, "trainer.max_epochs=20", "test=false")
    steps_per_epoch = 16 // 4
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["global_step"] == int(3 / validations_per_epoch * steps_per_epoch)


USER_DATA = {
    # Odd, varying sizes (80-220 px), RGB, 4 classes, a 2-px ignore band at every boundary.
    "rgb scenes": (lambda root: write_folder_dataset(root, train=8, val=4),
                   ["data.num_classes=4"]),
    # 16-bit single-channel TIFFs of an odd size, instance-label masks.
    "16-bit nuclei": (lambda root: write_nuclei_dataset(root, train=6, val=3, size=(61, 93)),
                      ["data.num_classes=2", "data.in_channels=1", "data.mask_type=instances"]),
}


@pytest.mark.parametrize("name", list(USER_DATA))
def test_on_users_data_validation_and_last_ckpt_are_the_average(tmp_path: Path, name: str) -> None:
    write, options = USER_DATA[name]
    root = write(tmp_path / "data")
    overrides = ["data=folder", f"data.root={root}", *options, "data.batch_size=2", "trainer.max_steps=8",
                 "callbacks=[default,early_stopping,ema]", "callbacks.ema.decay=0.9", "test=false"]
    metrics = _train_and_save_config(tmp_path, [*overrides, "model.base_width=4", "model.depth=2", *CPU,
                                                "callbacks.progress_bar=null"])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    averaged, raw = _float_tensors(checkpoint["state_dict"]), _float_tensors(checkpoint["current_model_state"])
    assert any(not torch.equal(averaged[key], raw[key]) for key in averaged)
    validated = evaluate(task_config("eval", [f"ckpt_path={last}", *CPU], tmp_path / "eval"))
    assert validated["val"]["loss"] == pytest.approx(metrics["val/loss"], abs=1e-5)


STOPPING = ["callbacks=[default,early_stopping]", "callbacks.early_stopping.min_delta=1.0", "trainer.max_epochs=20",
            "test=false"]


def test_a_stopped_run_run_again_stays_stopped_and_a_larger_patience_continues_it(tmp_path: Path) -> None:
    # Patience 1: the run stops at its second validation, the end of epoch 2 (8 steps).
    _trained(tmp_path, *STOPPING, "callbacks.early_stopping.patience=1")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 8
    before = last.read_bytes()
    # The same command again (ckpt_path=auto resumes): no step, last.ckpt untouched.
    shutil.rmtree(tmp_path / "run" / ".hydra")
    _trained(tmp_path, *STOPPING, "callbacks.early_stopping.patience=1")
    assert last.read_bytes() == before
    # Patience 3 on the command line (not the checkpoint's 1): two more validations, to step 16.
    shutil.rmtree(tmp_path / "run" / ".hydra")
    _trained(tmp_path, *STOPPING, "callbacks.early_stopping.patience=3")
    assert torch.load(last, weights_only=True)["global_step"] == 16


def test_without_lightnings_weight_averaging_ema_is_one_line_naming_the_upgrade(monkeypatch) -> None:
    monkeypatch.setattr(weight_averaging, "EMAWeightAveraging", None)
    with pytest.raises(SegkitError, match=r"lightning>=2\.6"):
        weight_averaging.WeightEMA()


def test_a_decay_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(SegkitError, match=r"callbacks\.ema\.decay=1\.5"):
        weight_averaging.WeightEMA(decay=1.5)
