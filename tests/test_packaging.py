"""A regular (non-editable) wheel install ships the Hydra configs and finds them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO_ROOT, cli_env, describe

# Build from a copy of the sources: an in-tree build leaves build/ behind in the checkout,
# whose stale build/lib would leak deleted modules into later wheels.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "logs", "outputs", "multirun", "tests",
    "notebooks", "*.egg-info", "__pycache__", ".pytest_cache",
)


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd, capture_output=True, text=True, timeout=240,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCES)
    out = tmp / "dist"
    proc = pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source), cwd=tmp)
    if proc.returncode != 0:  # setuptools/wheel missing here: let pip fetch the build backend
        proc = pip("wheel", "--no-deps", "-w", str(out), str(source), cwd=tmp)
    assert proc.returncode == 0, describe(proc)
    (built,) = out.glob("segkit-*.whl")
    return built


@pytest.mark.timeout(600)
def test_wheel_contains_every_config_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "segkit/conf/train.yaml" in names
    assert "segkit/conf/eval.yaml" in names
    expected = {
        f"segkit/conf/{path.relative_to(REPO_ROOT / 'conf').as_posix()}"
        for path in (REPO_ROOT / "conf").rglob("*.yaml")
    }
    assert expected, "no configs found in the checkout"
    missing = expected - names
    assert not missing, f"configs missing from the wheel: {sorted(missing)}"


@pytest.mark.timeout(600)
def test_wheel_contains_every_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        path.relative_to(REPO_ROOT).as_posix()
        for package in ("segkit", "hydra_plugins")  # hydra_plugins: the Optuna sweeper plugin
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    assert {"segkit/training/checkpointing.py", "hydra_plugins/segkit_optuna_sweeper/optuna_sweeper.py"} <= modules
    missing = modules - names
    assert not missing, f"modules missing from the wheel (pyproject's packages list): {sorted(missing)}"
    # A namespace package that other plugins share: an __init__.py would hide theirs.
    assert "hydra_plugins/__init__.py" not in names


@pytest.mark.timeout(600)
def test_installed_wheel_finds_its_configs_and_runs_from_anywhere(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    proc = pip("install", "--no-deps", "--no-compile", "--target", str(site), str(wheel), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env(PYTHONPATH=str(site))

    proc = subprocess.run(
        [sys.executable, "-c",
         "import segkit; from segkit.config_dir import config_dir; "
         "print(segkit.__file__); print(config_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, describe(proc)
    package_file, conf = proc.stdout.strip().splitlines()[-2:]
    assert Path(package_file).resolve().is_relative_to(site.resolve()), package_file
    assert Path(conf).resolve() == (site / "segkit" / "conf").resolve()
    assert (Path(conf) / "train.yaml").is_file()

    proc = subprocess.run(
        [sys.executable, "-m", "segkit.cli.train", "--help"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, describe(proc)
    assert "== Configuration groups ==" in proc.stdout
    (model_line,) = [line for line in proc.stdout.splitlines() if line.startswith("model: ")]
    assert {"unet", "fcn8s"} <= set(model_line.removeprefix("model: ").split(", "))
    assert not list(elsewhere.iterdir()), "--help must not create files in the working directory"
