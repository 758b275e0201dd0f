"""Run directories and checkpoints a careless or hostile user hands segkit.

- A run directory belongs to one run: ``ckpt_path=auto`` resumes it only with the config that
  defines it; eval, predict and export never write into it.
- No code named by a file runs: a saved run config's ``_target_``, a checkpoint's loss name or
  module class must be segkit's own.
- A damaged or foreign checkpoint is one line, before any work.

Every case: exit code 2, one ``error:`` line naming the key or file, no step run, and every file
of the run directory byte-identical afterwards. Commands run in-process (``run_in_process``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY, TINY_MODEL, assert_one_line_error, run_in_process, tree_state

from segkit.cli import eval as eval_cli
from segkit.cli import export as export_cli
from segkit.cli import predict as predict_cli
from segkit.cli import train as train_cli

RUN = [*TINY, "test=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run: its run directory (with checkpoints and .hydra/)."""
    root = tmp_path_factory.mktemp("trained")
    result = run_in_process(train_cli.main, [*RUN, f"hydra.run.dir={root / 'run'}"], root)
    assert result.code == 0, result.stderr[-3000:]
    return root / "run"


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run's directory, for a test to hand to a command."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _checkpoint_with(run_dir: Path, edit: Callable[[dict], None]) -> Path:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    edit(checkpoint)
    path = run_dir.parent / "edited.ckpt"
    torch.save(checkpoint, path)
    return path


def _assert_refused_and_unchanged(main: object, argv: list[str], watched: Path, *names: str) -> None:
    before = tree_state(watched)
    result = run_in_process(main, argv, watched.parent)
    assert_one_line_error(result, *names)
    assert "resuming from" not in result.stderr + result.stdout
    assert tree_state(watched) == before, "files changed in the run directory"


# --- a run directory belongs to one run -------------------------------------------------------

@pytest.mark.parametrize(("override", "key"), [
    ("data.seed=7", "data.seed"),
    ("model.base_width=8", "model.base_width"),
    ("model/loss=dice", "model.loss"),
    ("seed=1", "seed"),
    ("++trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
    # An EMA run's checkpoints hold the average as their weights: adding (or dropping) it is another run.
    ("callbacks=[default,ema]", "callbacks.ema"),
])
def test_auto_resume_of_a_run_directory_with_another_config_is_refused(run_dir: Path, override: str, key: str) -> None:
    _assert_refused_and_unchanged(train_cli.main, [*RUN, override, f"hydra.run.dir={run_dir}"], run_dir,
                                  key, "hydra.run.dir", "ckpt_path=null")


def test_a_run_made_before_a_data_key_existed_resumes_while_that_key_stays_null() -> None:
    # data.folds and data.fold came later; older runs' saved configs lack them.
    from omegaconf import OmegaConf

    from segkit.training.run_dir_guard import first_difference

    saved = OmegaConf.create({"seed": 1, "data": {"root": "d"}, "model": {"lr": 0.1}})
    same = OmegaConf.create({"seed": 1, "data": {"root": "d", "folds": None, "fold": None}, "model": {"lr": 0.1}})
    assert first_difference(saved, same) is None
    folded = OmegaConf.create({"seed": 1, "data": {"root": "d", "folds": 5, "fold": None}, "model": {"lr": 0.1}})
    assert first_difference(saved, folded) == ("data.folds", None, 5)


def test_auto_resume_with_other_loader_workers_or_logging_is_accepted(run_dir: Path) -> None:
    # How data is loaded and what is logged are not what defines a run.
    argv = [*RUN, "data.num_workers=1", "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}"]
    result = run_in_process(train_cli.main, argv, run_dir.parent)
    assert result.code == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr + result.stdout


def test_folder_data_from_another_root_is_not_resumed(run_dir: Path, tmp_path: Path) -> None:
    saved = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    config["data"] = {"_target_": "segkit.data.FolderDataModule", "root": str(tmp_path / "theirs")}
    saved.write_text(yaml.safe_dump(config))
    argv = [*TINY_MODEL, "data=folder", f"data.root={tmp_path / 'mine'}", "data.num_classes=3", f"hydra.run.dir={run_dir}"]
    _assert_refused_and_unchanged(train_cli.main, argv, run_dir, "data.")


@pytest.mark.parametrize(("main", "argv"), [
    (eval_cli.main, ["ckpt_path={ckpt}"]),
    (predict_cli.main, ["ckpt_path={ckpt}", "input={image}", "output={out}"]),
    (export_cli.main, ["ckpt_path={ckpt}", "output={out}/model.onnx"]),
], ids=["eval", "predict", "export"])
def test_eval_predict_and_export_never_write_into_a_training_run(run_dir: Path, tmp_path: Path, main: object,
                                                                  argv: list[str]) -> None:
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (37, 29)).save(image)
    values = {"ckpt": run_dir / "checkpoints" / "last.ckpt", "image": image, "out": tmp_path / "out"}
    args = [a.format(**values) for a in argv] + [f"hydra.run.dir={run_dir}"]
    _assert_refused_and_unchanged(main, args, run_dir, "hydra.run.dir", "segkit-train run")
    assert not (tmp_path / "out").exists()


# --- no code from files -----------------------------------------------------------------------

def test_eval_refuses_a_saved_run_config_that_names_other_code(run_dir: Path, tmp_path: Path) -> None:
    created = tmp_path / "created_by_the_config"
    saved = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    config["data"] = {"_target_": "builtins.open", "_args_": [str(created), "w"]}
    saved.write_text(yaml.safe_dump(config))
    argv = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}"]
    _assert_refused_and_unchanged(eval_cli.main, argv, run_dir, "builtins.open", "config.yaml")
    assert not created.exists()


@pytest.mark.parametrize("target", [
    "segkit.data.modules.folder.os.system",  # a function of another package, reached through a segkit module
    "segkit.data.modules.shapes:np.save",
])
def test_a_target_reaching_other_code_through_segkit_is_refused(run_dir: Path, tmp_path: Path, target: str) -> None:
    saved = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    config["data"]["_target_"] = target
    saved.write_text(yaml.safe_dump(config))
    argv = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}"]
    _assert_refused_and_unchanged(eval_cli.main, argv, run_dir, target)


LOSS_NAMES = ["this.Anything", "torch.nn.Identity", "builtins.print"]
COMMANDS = {
    "eval": (eval_cli.main, ["ckpt_path={ckpt}", "hydra.run.dir={tmp}/eval"]),
    "predict": (predict_cli.main, ["ckpt_path={ckpt}", "input={tmp}/in.png", "output={tmp}/out", "hydra.run.dir={tmp}/p"]),
    "export": (export_cli.main, ["ckpt_path={ckpt}", "output={tmp}/out/model.onnx", "hydra.run.dir={tmp}/x"]),
}


def _command(name: str, ckpt: Path, tmp_path: Path) -> tuple[object, list[str]]:
    from PIL import Image

    Image.new("RGB", (33, 41)).save(tmp_path / "in.png")
    main, argv = COMMANDS[name]
    return main, [a.format(ckpt=ckpt, tmp=tmp_path) for a in argv]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_a_checkpoint_whose_loss_names_other_code_is_refused(run_dir: Path, tmp_path: Path, command: str,
                                                            loss: str, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint_with(run_dir, lambda c: c["hyper_parameters"].update(loss={"name": loss}))
    main, argv = _command(command, ckpt, tmp_path)
    _assert_refused_and_unchanged(main, argv, run_dir, loss)
    assert "Beautiful is better than ugly" not in capsys.readouterr().out  # `import this` never ran
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("module", "shown"), [
    ("os:system", "os:system"),
    ("segkit.models.base:torch", "segkit.models.base:torch"),
    ("segkit.data.modules.shapes:ShapesDataModule", "not a segkit model module"),
])
def test_a_checkpoint_naming_a_module_class_other_than_segkits_is_refused(run_dir: Path, tmp_path: Path,
                                                                         module: str, shown: str) -> None:
    ckpt = _checkpoint_with(run_dir, lambda c: c.update(segkit_module=module))
    main, argv = _command("eval", ckpt, tmp_path)
    _assert_refused_and_unchanged(main, argv, run_dir, shown)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_checkpoint_whose_class_count_disagrees_with_its_names_is_refused(run_dir: Path, tmp_path: Path,
                                                                           command: str) -> None:
    ckpt = _checkpoint_with(run_dir, lambda c: c["hyper_parameters"].update(num_classes=4))
    main, argv = _command(command, ckpt, tmp_path)
    _assert_refused_and_unchanged(main, argv, run_dir, "num_classes=4", "6 class names")


# --- damaged or foreign checkpoints -------------------------------------------------------------

@pytest.mark.parametrize(("content", "shown"), [
    (b"", "empty"),
    (b"\x00garbage\xff" * 100, "not a loadable checkpoint"),
    ("weights", "not a segkit-train checkpoint"),  # a bare torch.save of a state_dict
])
def test_train_refuses_a_damaged_or_foreign_checkpoint_before_any_step(tmp_path: Path, content: object,
                                                                      shown: str) -> None:
    ckpt = tmp_path / "given.ckpt"
    if content == "weights":
        torch.save({"conv.weight": torch.zeros(2, 2)}, ckpt)
    else:
        ckpt.write_bytes(content)  # type: ignore[arg-type]
    run = tmp_path / "run"
    _assert_refused_and_unchanged(train_cli.main, [*RUN, f"ckpt_path={ckpt}", f"hydra.run.dir={run}"], tmp_path,
                                  f"ckpt_path={ckpt}", shown)
    assert not (run / "checkpoints").exists()
