"""segkit-eval: metrics.json that reproduces training's validation scores, and one-line errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CPU, EVAL_CMD, TINY, CliRun, describe, run_cli, task_config
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segkit.cli.errors import SegkitError
from segkit.cli.eval import evaluate
from segkit.data.synthetic.shapes_render import SHAPES_CLASS_NAMES
from segkit.models import UNetModule
from segkit.models.loading import load_module
from segkit.scoring.losses import WeightMapCrossEntropy
from segkit.training.run import train

SCORES = ("mIoU", "mDice", "pixel_acc", "mean_acc", "fwIoU")


def last_logged(cli_run: CliRun, tag: str) -> float:
    events = EventAccumulator(str(cli_run.run_dir / "tensorboard"))
    events.Reload()
    return events.Scalars(tag)[-1].value


@pytest.fixture(scope="module")
def eval_run(cli_run: CliRun, tmp_path_factory: pytest.TempPathFactory):
    """``segkit-eval ckpt_path=<last.ckpt>`` of the shared training run; its metrics.json."""
    root = tmp_path_factory.mktemp("eval")
    # CPU like the training run (not a data override: the run's data config still applies).
    proc = run_cli(EVAL_CMD, [f"ckpt_path={cli_run.last_ckpt}", *CPU], root)
    assert proc.returncode == 0, describe(proc)
    written = list((root / "logs" / "eval" / "runs").glob("*/metrics.json"))
    assert len(written) == 1, written
    return json.loads(written[0].read_text())


@pytest.mark.timeout(300)
def test_metrics_json_has_the_scores_and_a_per_class_iou_map(eval_run: dict) -> None:
    scores = eval_run["val"]  # training's schema: the scores nested under their split
    for key in SCORES:
        assert isinstance(scores[key], float) and 0.0 <= scores[key] <= 1.0, key
    assert isinstance(scores["IoU"], dict) and isinstance(scores["Dice"], dict)
    assert list(scores["IoU"]) == list(scores["Dice"]) == list(SHAPES_CLASS_NAMES)
    ious = [v for v in scores["IoU"].values() if not math.isnan(v)]
    assert scores["mIoU"] == pytest.approx(sum(ious) / len(ious), abs=1e-9)
    assert "mIoU_best" not in scores and "test" not in eval_run


@pytest.mark.timeout(300)
def test_metrics_json_has_training_records_keys_and_evals_own(eval_run: dict, cli_run: CliRun) -> None:
    trained = json.loads((cli_run.run_dir / "metrics.json").read_text())
    assert trained["command"] == "train" and eval_run["command"] == "eval"
    shared = {"command", "run_dir", "overrides", "task_name", "seed", "model", "data", "wall_time_s",
              "global_step", "epochs", "parameters", "provenance"}
    assert shared <= trained.keys() and shared <= eval_run.keys()
    assert eval_run["provenance"]["versions"] == trained["provenance"]["versions"]
    assert eval_run["split"] == "val" and eval_run["class_names"] == list(SHAPES_CLASS_NAMES)
    assert eval_run["ckpt_path"] == str(cli_run.last_ckpt.resolve())
    assert eval_run["tta"] == "none" and eval_run["scales"] == [1.0]
    assert (Path(eval_run["run_dir"]) / "metrics.json").is_file()
    # The checkpoint evaluated is the run's last: its step, and the same net.
    assert eval_run["global_step"] == trained["global_step"]
    assert eval_run["parameters"] == trained["parameters"]
    assert eval_run["model"] == trained["model"] == "segkit.models.unet.UNetModule"
    assert eval_run["data"] == trained["data"] == "segkit.data.ShapesDataModule"


@pytest.mark.timeout(300)
def test_segkit_report_reads_a_training_run_and_its_evaluation(eval_run: dict, cli_run: CliRun, tmp_path: Path) -> None:
    from segkit.cli.report import main as report

    assert report([str(cli_run.run_dir), eval_run["run_dir"], "--out", str(tmp_path), "--no-figures"]) == 0
    with (tmp_path / "report.csv").open(newline="") as handle:
        rows = {Path(row["run_dir"]).resolve(): row for row in csv.DictReader(handle)}
    trained = json.loads((cli_run.run_dir / "metrics.json").read_text())
    assert float(rows[cli_run.run_dir.resolve()]["test/mIoU"]) == trained["test"]["mIoU"]
    assert float(rows[Path(eval_run["run_dir"])]["val/mIoU"]) == eval_run["val"]["mIoU"]


@pytest.mark.timeout(300)
def test_eval_of_last_ckpt_reproduces_the_last_epochs_validation_scores(
    eval_run: dict, cli_run: CliRun
) -> None:
    events = EventAccumulator(str(cli_run.run_dir / "tensorboard"))
    events.Reload()
    per_epoch = [event.value for event in events.Scalars("val/mIoU")]
    # The target must single out the last epoch, or loading other weights could pass unnoticed.
    assert len(set(per_epoch)) == len(per_epoch), per_epoch
    assert eval_run["val"]["mIoU"] == pytest.approx(per_epoch[-1], abs=1e-6)
    for key in ("mDice", "pixel_acc", "mean_acc", "fwIoU"):
        assert eval_run["val"][key] == pytest.approx(last_logged(cli_run, f"val/{key}"), abs=1e-6), key
    for per_class in ("IoU", "Dice"):
        for name, value in eval_run["val"][per_class].items():
            assert value == pytest.approx(last_logged(cli_run, f"val/{per_class}/{name}"), abs=1e-6), name


def test_eval_of_the_best_checkpoint_on_test_reproduces_trainings_test_scores(
    cli_run: CliRun, tmp_path: Path
) -> None:
    # segkit-train tests the best checkpoint; evaluating it in-process on split=test, with the
    # data config read from the run's .hydra/config.yaml, must give the same numbers.
    (best,) = [p for p in (cli_run.run_dir / "checkpoints").glob("epoch_*.ckpt")]
    cfg = task_config("eval", [f"ckpt_path={best}", "split=test", *CPU], tmp_path)
    result = evaluate(cfg)
    assert result["split"] == "test" and "val" not in result
    assert result["test"]["mIoU"] == pytest.approx(last_logged(cli_run, "test/mIoU"), abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    assert [p.name for p in tmp_path.glob(".*partial")] == []


def test_eval_uses_the_training_runs_data_config_even_for_non_square_images(tmp_path: Path) -> None:
    # Trained on 37x53 scenes (a list in the config, an int in eval.yaml's default): evaluating
    # without data overrides must use the run's data and reproduce its val/mIoU.
    run_dir = tmp_path / "run"
    cfg = task_config(
        "train",
        [*TINY, "data.image_size=[37,53]", "test=false", f"paths.root_dir={tmp_path}"],
        run_dir,
    )
    metrics = train(cfg)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as Hydra does for a CLI run
    eval_cfg = task_config(
        "eval", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *CPU], tmp_path / "eval"
    )
    result = evaluate(eval_cfg)
    assert result["val"]["mIoU"] == pytest.approx(metrics["val/mIoU"], abs=1e-6)


def test_a_data_field_override_keeps_the_training_runs_data_config(cli_run: CliRun, tmp_path: Path) -> None:
    # data.batch_size changes nothing that counts: the run's tiny data set is still used.
    cfg = task_config("eval", [f"ckpt_path={cli_run.last_ckpt}", "data.batch_size=3", *CPU], tmp_path)
    result = evaluate(cfg)
    assert result["val"]["mIoU"] == pytest.approx(last_logged(cli_run, "val/mIoU"), abs=1e-6)


def test_choosing_a_data_config_replaces_the_training_runs(cli_run: CliRun, tmp_path: Path) -> None:
    cfg = task_config(
        "eval", [f"ckpt_path={cli_run.last_ckpt}", "data=shapes", "data.image_size=16", "data.val_size=2", *CPU], tmp_path
    )
    result = evaluate(cfg)
    assert result["val"]["mIoU"] != pytest.approx(last_logged(cli_run, "val/mIoU"), abs=1e-6)


def assert_one_line_error(proc: subprocess.CompletedProcess, mentions: str) -> None:
    """Exit code 2, exactly one ``segkit-eval: error:`` line naming ``mentions``, no traceback."""
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segkit-eval: error:")]
    assert len(errors) == 1, proc.stderr
    assert mentions in errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.timeout(300)
def test_missing_checkpoint_is_a_one_line_error_with_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such.ckpt"
    proc = run_cli(EVAL_CMD, [f"ckpt_path={missing}"], tmp_path)
    assert_one_line_error(proc, str(missing))


@pytest.mark.timeout(300)
def test_garbage_checkpoint_is_a_one_line_error_with_exit_code_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint\n" + bytes(range(256)) * 4)
    proc = run_cli(EVAL_CMD, [f"ckpt_path={garbage}"], tmp_path)
    assert_one_line_error(proc, str(garbage))


def test_load_module_rebuilds_the_checkpoints_class(cli_run: CliRun) -> None:
    module = load_module(str(cli_run.last_ckpt))
    assert isinstance(module, UNetModule)
    assert module.hparams["base_width"] == 8


def test_a_checkpoint_from_before_model_loss_loads_with_its_loss(cli_run: CliRun, tmp_path: Path) -> None:
    # Earlier checkpoints stored loss_reduction and weight_map instead of the model.loss node.
    checkpoint = torch.load(cli_run.last_ckpt, map_location="cpu", weights_only=True)
    del checkpoint["hyper_parameters"]["loss"]
    checkpoint["hyper_parameters"].update(loss_reduction="sum", weight_map={"object_class": 1, "w0": 5.0, "sigma": 3.0})
    torch.save(checkpoint, tmp_path / "old.ckpt")
    module = load_module(str(tmp_path / "old.ckpt"))
    assert isinstance(module.criterion, WeightMapCrossEntropy)
    assert (module.criterion.object_class, module.criterion.w0, module.criterion.sigma, module.criterion.reduction) == (1, 5.0, 3.0, "sum")
    current = load_module(str(cli_run.last_ckpt))
    assert all(torch.equal(value, current.state_dict()[key]) for key, value in module.state_dict().items())


def test_load_module_refuses_a_torch_file_that_is_not_a_segkit_checkpoint(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(SegkitError, match="not a segkit-train checkpoint"):
        load_module(str(foreign))


def test_load_module_refuses_a_module_outside_segkit(tmp_path: Path) -> None:
    # The class to rebuild is read from the file: only segkit's classes are accepted.
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"segkit_module": "os:system", "state_dict": {}}, hostile)
    with pytest.raises(SegkitError, match="names os:system: refused"):
        load_module(str(hostile))


def test_unknown_split_is_a_user_error(cli_run: CliRun, tmp_path: Path) -> None:
    cfg = task_config("eval", [f"ckpt_path={cli_run.last_ckpt}", "split=train"], tmp_path)
    with pytest.raises(SegkitError, match="split=train"):
        evaluate(cfg)


@pytest.mark.timeout(400)
def test_ddp_on_two_cpu_processes_scores_every_image_once(cli_run: CliRun, tmp_path: Path) -> None:
    # 7 validation scenes: 4 + 3 across two ranks, where a padding sampler would score one twice.
    scores, per_image = {}, {}
    for trainer in ("cpu", "ddp_cpu"):
        root = tmp_path / trainer
        proc = run_cli(EVAL_CMD, [f"ckpt_path={cli_run.last_ckpt}", f"trainer={trainer}", "data.val_size=7"], root)
        assert proc.returncode == 0, describe(proc)
        # One run directory for the DDP run, not one per rank; one metrics.json (rank 0).
        (written,) = list((root / "logs" / "eval" / "runs").glob("*/metrics.json"))
        scores[trainer] = json.loads(written.read_text())
        with np.load(written.parent / "per_image_confusion.npz") as npz:
            per_image[trainer] = npz["confusion"]
    # The ranks' per-image matrices, gathered and put back in dataset order: as on one process.
    assert per_image["ddp_cpu"].shape[0] == 7
    assert np.array_equal(per_image["ddp_cpu"], per_image["cpu"])
    assert scores["ddp_cpu"]["confusion_matrix"] == scores["cpu"]["confusion_matrix"]
    for key in SCORES:
        assert scores["ddp_cpu"]["val"][key] == pytest.approx(scores["cpu"]["val"][key], abs=1e-6), key
    for name, value in scores["cpu"]["val"]["IoU"].items():
        other = scores["ddp_cpu"]["val"]["IoU"][name]
        assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value, abs=1e-6), name


def test_evaluation_sampler_splits_without_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.data import base

    monkeypatch.setattr(base.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(base.dist, "get_world_size", lambda: 2)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(base.dist, "get_rank", lambda rank=rank: rank)
        shares.append(list(base.evaluation_sampler(list(range(7)))))
    assert sorted(shares[0] + shares[1]) == list(range(7))  # each sample once, none padded
