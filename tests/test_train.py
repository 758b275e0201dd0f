"""segkit-train end to end: fast_dev_run per model, multirun, overfitting, run directory contents."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from helpers import (
    CLI_RUN_EPOCHS,
    CPU,
    QUIET_CALLBACKS,
    TINY,
    TINY_DATA,
    TINY_MODEL,
    TRAIN_CMD,
    CliRun,
    config_options,
    describe,
    needs,
    run_cli,
    task_config,
)
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from segkit.cli.errors import SegkitError
from segkit.training.run import resolve_ckpt_path, train
from segkit.training.run_dir import RunDirectory

BEST_CKPT = re.compile(r"epoch_(\d{3})-mIoU_(\d\.\d{4})\.ckpt")


def tensorboard_events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    return accumulator


# --- the debug=fdr preset through the command line ------------------------------------------
# (Every architecture's own fast_dev_run: tests/test_architecture_contract.py.)


@pytest.fixture(scope="module")
def fdr_run(tmp_path_factory: pytest.TempPathFactory):
    model = "unet"
    root = tmp_path_factory.mktemp(f"fdr_{model}")
    proc = run_cli(TRAIN_CMD, ["debug=fdr", f"model={model}", *TINY_DATA, *QUIET_CALLBACKS], root)
    return model, root, proc


@pytest.mark.timeout(300)
def test_fast_dev_run_exits_zero_in_a_debug_run_directory(fdr_run) -> None:
    model, root, proc = fdr_run
    assert proc.returncode == 0, f"model={model}: {describe(proc)}"
    run_dirs = list((root / "logs" / "debug" / "runs").iterdir())
    assert len(run_dirs) == 1
    assert OmegaConf.load(run_dirs[0] / ".hydra" / "config.yaml").trainer.fast_dev_run is True


@pytest.mark.timeout(300)
def test_fast_dev_run_writes_no_checkpoint_and_no_tensorboard_logs(fdr_run) -> None:
    # conf/debug/fdr.yaml promises: "no logs or checkpoints are written".
    model, root, proc = fdr_run
    assert proc.returncode == 0, f"model={model}: {describe(proc)}"
    (run_dir,) = (root / "logs" / "debug" / "runs").iterdir()
    assert not list(run_dir.rglob("*.ckpt")), (
        f"fast_dev_run wrote checkpoints: {sorted(p.relative_to(run_dir) for p in run_dir.rglob('*.ckpt'))}"
    )
    assert not list(run_dir.rglob("events.out.tfevents.*"))


# --- multirun ------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_multirun_launches_one_job_per_value_in_numbered_dirs(tmp_path: Path) -> None:
    proc = run_cli(TRAIN_CMD, ["-m", "data.seed=1,2", "debug=fdr", *TINY_DATA, *QUIET_CALLBACKS], tmp_path)
    assert proc.returncode == 0, describe(proc)
    sweeps = list((tmp_path / "logs" / "debug" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    seeds = [OmegaConf.load(sweeps[0] / job / ".hydra" / "config.yaml").data.seed for job in jobs]
    assert seeds == [1, 2]


# --- overfitting a few batches -------------------------------------------------------------


def test_debug_overfit_drives_the_train_loss_down(tmp_path: Path) -> None:
    cfg = task_config(
        "train",
        ["debug=overfit", *TINY_DATA, *QUIET_CALLBACKS, *CPU, "trainer.max_epochs=10",
         "model.base_width=8", "model.depth=2", "trainer.log_every_n_steps=1",
         f"paths.root_dir={tmp_path}"],
        tmp_path / "run",
    )
    assert cfg.test is False
    metrics = train(cfg)
    losses = [event.value for event in tensorboard_events(tmp_path / "run").Scalars("train/loss")]
    batches = cfg.trainer.overfit_batches
    assert len(losses) == batches * 10
    first_epoch, last_epoch = losses[:batches], losses[-batches:]
    assert sum(last_epoch) / batches < 0.75 * sum(first_epoch) / batches, losses
    assert not any(key.startswith("test/") for key in metrics)  # debug=overfit skips testing


# --- resuming -----------------------------------------------------------------------------


def _finished_one_epoch_run(extra: list[str], tmp_path: Path) -> tuple[list[str], Path]:
    common = [*TINY, *extra, "test=false", f"paths.root_dir={tmp_path}"]
    train(task_config("train", [*common, "trainer.max_epochs=1"], tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    return common, last


# A longer run is asked for in steps, the run's unit (trainer.max_steps): Lightning's
# iteration-based resume does not start another epoch for a raised max_epochs alone.
LONGER = ["trainer.max_epochs=-1", "trainer.max_steps=8"]


def test_resuming_without_a_fixed_length_schedule_continues_for_more_steps(tmp_path: Path) -> None:
    # train.yaml: "ckpt_path: Resume from a checkpoint". A finished 1-epoch run (4 steps) is
    # continued to 8 steps, as when one decides to train longer.
    common, first_last = _finished_one_epoch_run(["model.scheduler=null"], tmp_path)
    resumed = task_config("train", [*common, *LONGER, f"ckpt_path={first_last}"], tmp_path / "second")
    metrics = train(resumed)
    second_last = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=True)
    assert second_last["global_step"] == 8
    assert "val/mIoU" in metrics


def test_stretching_a_resumed_one_cycle_schedule_is_a_clear_error(tmp_path: Path) -> None:
    # The default OneCycleLR was built for 4 steps; a resumed run of 8 cannot follow it.
    common, first_last = _finished_one_epoch_run([], tmp_path)
    resumed = task_config("train", [*common, *LONGER, f"ckpt_path={first_last}"], tmp_path / "second")
    with pytest.raises(SegkitError, match=r"OneCycleBudgetLR was built for total_steps=4 steps but this run has 8"):
        train(resumed)


# --- every logger and callbacks option trains ----------------------------------------------

LOGGER_FILES = {
    "tensorboard": ["tensorboard/events.out.tfevents.*"],
    "csv": ["csv/metrics.csv"],
    "many": ["tensorboard/events.out.tfevents.*", "csv/metrics.csv"],
}


# wandb and mlflow: tests/test_trackers.py, through segkit-train with their folders kept in tmp dirs.
@pytest.mark.parametrize("option", [option for option in config_options("logger") if option not in ("wandb", "mlflow")])
def test_every_logger_option_trains_and_writes_its_logs(option: str, tmp_path: Path) -> None:
    cfg = task_config(
        "train", [f"logger={option}", *TINY, "test=false", f"paths.root_dir={tmp_path}"],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert "val/mIoU" in metrics
    for pattern in LOGGER_FILES.get(option, []):
        assert list((tmp_path / "run").glob(pattern)), f"logger={option}: no {pattern}"
    if "csv/metrics.csv" in LOGGER_FILES.get(option, []):
        header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]
        assert "val/mIoU" in header.split(",")


@pytest.mark.parametrize("option", config_options("callbacks"))
def test_every_callbacks_option_trains(option: str, tmp_path: Path) -> None:
    cfg = task_config(
        "train", [f"callbacks={option}", *TINY_DATA, "model.base_width=4", "model.depth=2",
                  *CPU, "trainer.max_epochs=1",
                  f"paths.root_dir={tmp_path}"],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert {"val/mIoU", "test/mIoU"} <= set(metrics)


# --- the run directory of a real segkit-train run -------------------------------------------


def test_run_dir_holds_the_composed_config(cli_run: CliRun) -> None:
    config = OmegaConf.load(cli_run.run_dir / ".hydra" / "config.yaml")
    assert config.trainer.max_epochs == CLI_RUN_EPOCHS
    assert config.data.image_size == 32
    assert cli_run.run_dir.parent == cli_run.root / "logs" / "train" / "runs"


def test_run_dir_holds_the_run_record_written_whole(cli_run: CliRun) -> None:
    run = RunDirectory(cli_run.run_dir)
    record = run.read_record()
    assert record["command"] == "train" and Path(record["run_dir"]) == cli_run.run_dir.resolve()
    assert 0.0 <= record["test"]["mIoU"] <= 1.0 and "IoU" in record["val"]
    assert record["global_step"] > 0 and record["parameters"]["total"] > 0
    assert Path(record["best_checkpoint"]).parent == run.checkpoints and record["best_monitor"] == "val/mIoU"
    assert not list(cli_run.run_dir.glob(".*partial"))  # written through a temporary file, renamed


def test_run_directory_knows_where_a_checkpoint_belongs(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert RunDirectory.of_checkpoint(run.checkpoints / "epoch_001.ckpt") == run
    assert RunDirectory.of_checkpoint(tmp_path / "hpc_ckpt_3.ckpt") == run
    assert run.config_path == tmp_path / ".hydra" / "config.yaml" and not run.is_run()
    run.write_record({"command": "train"})
    assert run.is_run() and run.read_record() == {"command": "train"}


def test_tensorboard_has_val_miou_per_epoch_and_prediction_images(cli_run: CliRun) -> None:
    events = tensorboard_events(cli_run.run_dir)
    tags = events.Tags()
    assert "val/mIoU" in tags["scalars"]
    assert "train/loss" in tags["scalars"]
    assert "test/mIoU" in tags["scalars"]
    # One value per real validation epoch; the sanity check is not logged.
    assert len(events.Scalars("val/mIoU")) == CLI_RUN_EPOCHS
    assert "val/predictions" in tags["images"]
    images = events.Images("val/predictions")
    assert len(images) == CLI_RUN_EPOCHS
    # One row per logged scene (6 of the 8 val scenes): input | ground truth | prediction.
    tile = 256 + 2  # each 32-px scene enlarged 8x (nearest) to min_tile_size 256, plus make_grid's padding
    assert (images[-1].width - 2, images[-1].height - 2) == (3 * tile, 6 * tile)


def test_tensorboard_has_the_run_config_as_hparams(cli_run: CliRun) -> None:
    events = tensorboard_events(cli_run.run_dir)
    content = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model/base_width"].number_value == 8
    assert hparams["data/image_size"].number_value == 32
    assert hparams["model/params/total"].number_value > 0
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.experiment.metric_infos] == ["val/mIoU"]


def test_checkpoints_are_last_and_the_best_named_with_its_miou(cli_run: CliRun) -> None:
    checkpoints = sorted(p.name for p in (cli_run.run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints
    best = [name for name in checkpoints if name != "last.ckpt"]
    assert len(best) == 1, checkpoints
    match = BEST_CKPT.fullmatch(best[0])
    assert match, f"unexpected best checkpoint name {best[0]!r}"
    val_miou = [event.value for event in tensorboard_events(cli_run.run_dir).Scalars("val/mIoU")]
    best_epoch = max(range(len(val_miou)), key=val_miou.__getitem__)
    assert int(match.group(1)) == best_epoch
    # The name shows the best val/mIoU to 4 decimals (TensorBoard keeps it as float32).
    assert abs(float(match.group(2)) - val_miou[best_epoch]) <= 0.5e-4 + 1e-6


def test_resolve_ckpt_path(tmp_path: Path) -> None:
    assert resolve_ckpt_path(None, str(tmp_path)) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(SegkitError, match="ckpt_path=last"):
        resolve_ckpt_path("last", str(tmp_path))
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resolve_ckpt_path("last", str(tmp_path)) == str(last)
    assert resolve_ckpt_path(str(last), "/elsewhere") == str(last)
    with pytest.raises(SegkitError, match="missing.ckpt"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), str(tmp_path))


def test_ckpt_path_auto_resumes_from_the_newest_checkpoint_of_the_run_dir_or_starts_fresh(tmp_path: Path) -> None:
    assert resolve_ckpt_path("auto", str(tmp_path)) is None  # a job's first start
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    os.utime(last, ns=(1_000_000_000, 1_000_000_000))
    assert resolve_ckpt_path("auto", str(tmp_path)) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # Lightning's save on SLURM's signal, newer
    hpc.write_bytes(b"")
    os.utime(hpc, ns=(2_000_000_000, 2_000_000_000))
    assert resolve_ckpt_path("auto", str(tmp_path)) == str(hpc)
    os.utime(last, ns=(3_000_000_000, 3_000_000_000))  # validation after the requeue wrote last.ckpt
    assert resolve_ckpt_path("auto", str(tmp_path)) == str(last)


@pytest.mark.timeout(300)
def test_missing_resume_checkpoint_is_a_one_line_error_with_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "last.ckpt"
    proc = run_cli(TRAIN_CMD, [f"ckpt_path={missing}", "debug=fdr", *TINY_DATA, *QUIET_CALLBACKS],
                   tmp_path)
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segkit-train: error:")]
    assert len(errors) == 1 and str(missing) in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr



@pytest.mark.timeout(300)
def test_errors_raised_while_hydra_instantiates_are_one_line_too(tmp_path: Path) -> None:
    missing = tmp_path / "vgg16.pth"
    proc = run_cli(TRAIN_CMD, ["model=fcn32s", f"model.backbone_weights={missing}", "debug=fdr", *TINY_DATA], tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.strip().splitlines()[-1].startswith(f"segkit-train: error: backbone_weights={missing}: no such file")
    assert "Traceback" not in proc.stderr and "Error in call to target" not in proc.stderr


@pytest.mark.timeout(300)
def test_multirun_flag_may_follow_overrides(tmp_path: Path) -> None:
    # As the README writes it: segkit-train experiment=... -m model=a,b
    proc = run_cli(TRAIN_CMD, ["debug=fdr", *TINY_DATA, *QUIET_CALLBACKS, "-m", "model.depth=1,2"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.timeout(300)
def test_optuna_study_of_three_trials_maximises_the_returned_metric(tmp_path: Path) -> None:
    proc = run_cli(TRAIN_CMD, ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2",
                               *TINY_DATA, "model.depth=2", *QUIET_CALLBACKS, *CPU, "trainer.max_epochs=1"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    trials = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1", "2"]
    # Each trial returned its val/mIoU_best (the optimized_metric); the study kept the largest.
    returned = [float(re.search(r"val/mIoU_best=([\d.]+)", (t / "train.log").read_text()).group(1)) for t in trials]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(returned), abs=1e-4)
    assert set(best.best_params) == {"model.optimizer.lr", "model.base_width", "model.optimizer.weight_decay"}


@needs("hydra_plugins.hydra_submitit_launcher", "pip install 'segkit[slurm]'")
@pytest.mark.timeout(300)
def test_a_sweep_runs_through_submitits_local_executor(tmp_path: Path) -> None:
    # The SLURM launcher's sibling: same plugin and job pickling, processes on this machine.
    proc = run_cli(TRAIN_CMD, ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "debug=fdr",
                               "data.seed=1,2", *TINY_DATA, *QUIET_CALLBACKS, *CPU], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for seed, job in zip((1, 2), jobs):
        assert OmegaConf.load(job / ".hydra" / "config.yaml").data.seed == seed
        assert "final metrics" in (job / "train.log").read_text()
    assert any((sweep / ".submitit").rglob("*_result.pkl"))


@pytest.mark.timeout(300)
def test_ddp_training_on_two_cpu_processes_shards_the_data_into_one_run_directory(tmp_path: Path) -> None:
    # Not TINY: its trainer.devices=1 would win over trainer=ddp_cpu's 2 processes.
    overrides = [*TINY_DATA, *TINY_MODEL, *QUIET_CALLBACKS, "trainer=ddp_cpu", "trainer.max_epochs=2", "test=false"]
    proc = run_cli(TRAIN_CMD, overrides, tmp_path)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()  # one per run, not per rank
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # 16 training scenes, batch 4: 2 steps per epoch on each of 2 ranks (4 on one process).
    assert last["global_step"] == 4
    assert sorted(p.name for p in tmp_path.rglob("*.ckpt")) == sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_a_required_value_left_unset_is_a_one_line_error_naming_the_key(tmp_path: Path) -> None:
    # data=folder marks data.root required (???): no Hydra stack of omegaconf internals.
    proc = run_cli(TRAIN_CMD, ["data=folder", "data.num_classes=3", "debug=fdr"], tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.strip().splitlines()[-1] == (
        "segkit-train: error: data.root is not set; pass data.root=... (the config marks it required: ???)"
    )


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_issues_sweep_of_two_models_and_two_seeds_runs_four_jobs(tmp_path: Path) -> None:
    # The issue's `segkit-train -m model=fcn8s,unet data.seed=1,2` with the basic launcher (one
    # batch each), with the patch CNN for FCN-8s: a full-width FCN-8s step took a minute here.
    proc = run_cli(TRAIN_CMD, ["-m", "model=patch_cnn,unet", "data.seed=1,2", "debug=fdr", *TINY_DATA, *QUIET_CALLBACKS],
                   tmp_path, timeout=400)
    assert proc.returncode == 0, describe(proc)
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    chosen = [OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.runtime.choices.model for job in jobs]
    seeds = [OmegaConf.load(job / ".hydra" / "config.yaml").data.seed for job in jobs]
    assert list(zip(chosen, seeds)) == [("patch_cnn", 1), ("patch_cnn", 2), ("unet", 1), ("unet", 2)]
