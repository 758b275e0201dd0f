"""Ensembles of checkpoints (``ckpt_path=[a.ckpt,b.ckpt]`` or a glob pattern) in segkit-predict and
segkit-eval: the mean of the models' softmax probabilities, each model fed the image normalised as
its own training data was; models that cannot be averaged are refused before any output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
import yaml
from helpers import CPU, CliRun, assert_one_line_error, run_in_process, task_config, tree_state
from PIL import Image

from segkit.cli import eval as eval_cli
from segkit.cli import export as export_cli
from segkit.cli import predict as predict_cli
from segkit.cli.eval import evaluate
from segkit.data.spec import DataSpec
from segkit.inference.ensemble import Ensemble, Normalization
from segkit.inference.predict import InferenceConfig, predict_bands
from segkit.models import UNetModule, UNetPaperModule
from segkit.models.ensemble import EnsembleModule

SHAPES = ("background", "disc", "square", "triangle", "ring", "cross")


def save(module: L.LightningModule, run: Path) -> Path:
    """``module``'s checkpoint as ``<run>/checkpoints/last.ckpt`` (a run without a saved config)."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    path = run / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def unet(seed: int, classes: int, channels: int, mean: float, std: float, intensity: dict | None = None,
         names: tuple[str, ...] | None = None, paper: bool = False) -> L.LightningModule:
    """An untrained tiny U-Net whose checkpoint says it was trained with this normalisation; its
    convolution weights doubled, so that its probabilities are far from uniform and depend on
    how its input is normalised."""
    spec = DataSpec.of(classes, names, channels, mean=[mean] * channels, std=[std] * channels, intensity=intensity)
    torch.manual_seed(seed)
    if paper:
        module: L.LightningModule = UNetPaperModule(num_classes=classes, in_channels=channels, depth=2, base_width=2,
                                                    tile=None, data_spec=spec, class_names=spec.class_names)
    else:
        module = UNetModule(num_classes=classes, in_channels=channels, depth=1, base_width=4, data_spec=spec,
                            class_names=spec.class_names)
    with torch.no_grad():
        for weight in module.parameters():
            weight.mul_(2.0 if weight.dim() == 4 else 1.0)
    return module


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints of untrained models: ``fold0``/``fold1`` (6 RGB classes, other weights and
    statistics, alone under ``folds/``), ``two_classes``, ``renamed`` (6 classes, other names), and
    grey 16-bit models of other intensity scalings (``grey_*``, ``paper_*``)."""
    root = tmp_path_factory.mktemp("ensemble_models")
    percentile = {"mode": "percentile", "percentiles": [1.0, 99.8], "value_range": None}
    fixed = {"mode": "range", "percentiles": [1.0, 99.8], "value_range": [0.0, 12000.0]}
    made = {
        "folds/fold0": unet(0, 6, 3, 0.5, 0.25, names=SHAPES),
        "folds/fold1": unet(1, 6, 3, 0.2, 0.1, names=SHAPES),
        "two_classes": unet(2, 2, 3, 0.5, 0.25),
        "renamed": unet(3, 6, 3, 0.5, 0.25, names=("bg", "a", "b", "c", "d", "e")),
        "grey_a": unet(4, 2, 1, 0.5, 0.25, percentile),
        "grey_b": unet(5, 2, 1, 0.3, 0.2, fixed),
        "paper_a": unet(6, 2, 1, 0.5, 0.25, percentile, paper=True),
        "paper_b": unet(7, 2, 1, 0.3, 0.2, fixed, paper=True),
    }
    return {Path(name).name: save(module, root / name) for name, module in made.items()}


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photo")
    pixels = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "odd.png")
    return folder / "odd.png"


def predicted(ckpt: str, image: Path, output: Path, *extra: str) -> dict[str, np.ndarray]:
    """``segkit-predict ckpt_path=<ckpt> save.probabilities=true``'s mask and probabilities of ``image``."""
    result = run_in_process(predict_cli.main, [f"ckpt_path={ckpt}", f"input={image}", f"output={output}",
                                               "save.probabilities=true", "progress_bar=false", *extra], output.parent)
    assert result.code == 0, result.stderr[-3000:]
    stem = image.name.split(".")[0]
    (mask,) = [p for p in output.iterdir() if p.stem == stem]
    array = tifffile.imread(mask) if mask.suffix == ".tif" else np.array(Image.open(mask))
    return {"mask": array, "probabilities": np.load(output / f"{stem}_probs.npy").astype(np.float32)}


def assert_mean_of(ensemble: dict[str, np.ndarray], *alone: dict[str, np.ndarray]) -> None:
    """The ensemble's probabilities are the mean of the models' (float16 files: to 1e-3), and its
    mask their argmax wherever the two likeliest classes are told apart."""
    mean = sum(a["probabilities"] for a in alone) / len(alone)
    assert np.abs(ensemble["probabilities"] - mean).max() < 1e-3
    top2 = np.sort(mean, axis=0)[-2:]
    clear = top2[1] - top2[0] > 3e-3
    assert clear.mean() > 0.25  # untrained models: many near-ties, yet enough pixels to compare
    assert np.array_equal(ensemble["mask"][clear], mean.argmax(0)[clear])


# --- segkit-predict ---------------------------------------------------------------------------

def test_a_model_as_a_one_model_ensemble_predicts_what_it_predicts_alone() -> None:
    # Overlapping windows, Gaussian blending and flip TTA average logits; the ensemble's
    # log-probabilities differ from them by one value per pixel, which none of that changes.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    image = np.random.default_rng(1).integers(0, 256, (70, 53, 3), dtype=np.uint8)
    config = InferenceConfig(mode="slide", window=32, overlap=0.5, blending="gaussian", tta="flip")
    stats = ([0.5] * 3, [0.25] * 3)
    alone = list(predict_bands(net, image, *stats, config, probabilities=True))
    ensemble = Ensemble([net], [Normalization.of(*stats)])
    together = list(predict_bands(ensemble, image, [0.0] * 3, [1.0] * 3, config, probabilities=True))
    assert [top for top, _, _ in together] == [top for top, _, _ in alone]
    for (_, _, p_alone), (_, _, p_together) in zip(alone, together):
        np.testing.assert_allclose(p_together, p_alone, atol=1e-5)


def test_a_one_checkpoint_list_predicts_as_that_checkpoint(models: dict[str, Path], photo: Path, tmp_path: Path) -> None:
    alone = predicted(str(models["fold0"]), photo, tmp_path / "alone")
    listed = predicted(f"[{models['fold0']}]", photo, tmp_path / "listed")
    assert np.array_equal(listed["mask"], alone["mask"])
    assert np.array_equal(listed["probabilities"], alone["probabilities"])


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_two_models_predict_the_mean_of_their_probabilities(models: dict[str, Path], photo: Path, tmp_path: Path,
                                                            tta: str) -> None:
    # fold1's checkpoint says mean 0.2 / std 0.1, fold0's 0.5 / 0.25: each, alone or in the
    # ensemble, sees the photo normalised as its own training data was.
    extra = ("inference.mode=whole", f"inference.tta={tta}")
    alone = [predicted(str(models[name]), photo, tmp_path / name, *extra) for name in ("fold0", "fold1")]
    ensemble = predicted(f"[{models['fold0']},{models['fold1']}]", photo, tmp_path / "ensemble", *extra)
    assert not np.allclose(alone[0]["probabilities"], alone[1]["probabilities"], atol=0.05)  # two different models
    assert_mean_of(ensemble, *alone)


@pytest.mark.parametrize("kind", ["grey", "paper"])
def test_tile_mode_predicts_an_odd_sized_16_bit_image_with_an_ensemble(models: dict[str, Path], tmp_path: Path,
                                                                       kind: str) -> None:
    # Percentile scaling for one model, a fixed range for the other: each gets its own. The tiles
    # do not overlap, so every pixel's probabilities are exactly the mean of the models' own.
    pixels = np.random.default_rng(2).normal(3000, 800, (45, 71)).clip(0, 65535).astype(np.uint16)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "cells.tif", pixels, tile=(16, 16))
    image = tmp_path / "in" / "cells.tif"
    extra = ("inference.mode=tile", "inference.window=20", "inference.context=8")
    a, b = models[f"{kind}_a"], models[f"{kind}_b"]
    alone = [predicted(str(ckpt), image, tmp_path / ckpt.parent.parent.name, *extra) for ckpt in (a, b)]
    ensemble = predicted(f"[{a},{b}]", image, tmp_path / "ensemble", *extra)
    assert ensemble["mask"].shape == (45, 71) and ensemble["probabilities"].shape == (2, 45, 71)
    assert_mean_of(ensemble, *alone)


def test_a_glob_pattern_names_every_fold(models: dict[str, Path], photo: Path, tmp_path: Path) -> None:
    pattern = models["fold0"].parents[2] / "*" / "checkpoints" / "last.ckpt"
    globbed = predicted(str(pattern), photo, tmp_path / "globbed")
    listed = predicted(f"[{models['fold0']},{models['fold1']}]", photo, tmp_path / "listed")
    assert np.array_equal(globbed["probabilities"], listed["probabilities"])
    nothing = str(pattern).replace("last.ckpt", "best.ckpt")
    result = run_in_process(predict_cli.main, [f"ckpt_path={nothing}", f"input={photo}", f"output={tmp_path / 'no'}"], tmp_path)
    assert_one_line_error(result, nothing, "no file matches")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(("pair", "values"), [
    (("fold0", "two_classes"), ("num_classes=6", "num_classes=2")),
    (("fold0", "renamed"), ("class_names=['background'", "class_names=['bg'")),
    (("two_classes", "grey_a"), ("in_channels=3", "in_channels=1")),
], ids=["classes", "class-names", "channels"])
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_models_that_cannot_be_averaged_are_refused_before_any_output(models: dict[str, Path], photo: Path,
                                                                      tmp_path: Path, command: str,
                                                                      pair: tuple[str, str], values: tuple[str, str]) -> None:
    ckpts = [str(models[name]) for name in pair]
    argv = [f"ckpt_path=[{ckpts[0]},{ckpts[1]}]"]
    if command == "predict":
        result = run_in_process(predict_cli.main, [*argv, f"input={photo}", f"output={tmp_path / 'out'}"], tmp_path)
    else:
        result = run_in_process(eval_cli.main, [*argv, *CPU], tmp_path)
    assert_one_line_error(result, *ckpts, *values)
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_commands_of_one_model_refuse_a_list(models: dict[str, Path], tmp_path: Path) -> None:
    argv = [f"ckpt_path=[{models['fold0']},{models['fold1']}]", f"output={tmp_path / 'model.onnx'}"]
    assert_one_line_error(run_in_process(export_cli.main, argv, tmp_path), "segkit-export takes one checkpoint")


# --- segkit-eval ------------------------------------------------------------------------------

def test_each_model_sees_the_data_in_its_own_normalisation() -> None:
    # The data normalises with 0.5 / 0.25; a model trained with 0.4 / 0.3 gets the same pixels
    # normalised its way, whatever the data did.
    model = unet(0, 3, 3, 0.4, 0.3).eval()
    pixels = torch.rand(2, 3, 16, 16)
    own = Normalization.of([0.4] * 3, [0.3] * 3)
    ensemble = EnsembleModule([model], [own], data_mean=[0.5] * 3, data_std=[0.25] * 3).eval()
    with torch.no_grad():
        together = ensemble((pixels - 0.5) / 0.25).softmax(1)
        alone = model((pixels - 0.4) / 0.3).softmax(1)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def single(cli_run: CliRun, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The test-split record of ``segkit-eval`` of the shared training run's last checkpoint."""
    return evaluate(task_config("eval", [f"ckpt_path={cli_run.last_ckpt}", "split=test", *CPU],
                                tmp_path_factory.mktemp("single")))


def test_an_ensemble_of_one_file_twice_scores_as_that_file(cli_run: CliRun, single: dict, tmp_path: Path) -> None:
    last = cli_run.last_ckpt
    record = evaluate(task_config("eval", [f"ckpt_path=[{last},{last}]", "split=test", *CPU], tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text()) == record
    assert record["ckpt_path"] == [str(last.resolve())] * 2 and single["ckpt_path"] == str(last.resolve())
    assert record["global_step"] == [single["global_step"]] * 2
    assert record["parameters"]["total"] == 2 * single["parameters"]["total"]
    assert record["confusion_matrix"] == single["confusion_matrix"]
    for key in ("mIoU", "mDice", "pixel_acc", "mean_acc", "fwIoU"):
        assert record["test"][key] == pytest.approx(single["test"][key], abs=1e-9), key


def _copy_run(cli_run: CliRun, to: Path, data_edit: dict) -> Path:
    """A copy of the training run (config and last checkpoint) whose saved data config has ``data_edit``."""
    (to / "checkpoints").mkdir(parents=True)
    shutil.copy(cli_run.last_ckpt, to / "checkpoints" / "last.ckpt")
    shutil.copytree(cli_run.run_dir / ".hydra", to / ".hydra")
    config = yaml.safe_load((to / ".hydra" / "config.yaml").read_text())
    config["data"].update(data_edit)
    (to / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return to / "checkpoints" / "last.ckpt"


def test_an_ensemble_of_folds_is_scored_on_test_and_refused_on_val(cli_run: CliRun, single: dict, tmp_path: Path) -> None:
    other_fold = _copy_run(cli_run, tmp_path / "fold1", {"fold": 1})
    both = f"ckpt_path=[{cli_run.last_ckpt},{other_fold}]"
    record = evaluate(task_config("eval", [both, "split=test", *CPU], tmp_path / "eval"))
    assert record["ckpt_path"] == [str(cli_run.last_ckpt.resolve()), str(other_fold.resolve())]
    assert record["confusion_matrix"] == single["confusion_matrix"]  # the same weights twice
    # On val, one fold's validation images are the other's training images.
    refused = run_in_process(eval_cli.main, [both, "split=val", *CPU], tmp_path / "val")
    assert_one_line_error(refused, "split=val", "data.fold", "split=test")
    assert tree_state(tmp_path / "val") == {}  # no file written


def test_models_trained_on_another_data_set_are_refused(cli_run: CliRun, tmp_path: Path) -> None:
    other = _copy_run(cli_run, tmp_path / "em", {"_target_": "segkit.data.EMDataModule"})
    result = run_in_process(eval_cli.main, [f"ckpt_path=[{cli_run.last_ckpt},{other}]", *CPU], tmp_path)
    assert_one_line_error(result, str(cli_run.last_ckpt), str(other), "data._target_", "segkit.data.EMDataModule")
    assert tree_state(tmp_path / "logs") == {}
