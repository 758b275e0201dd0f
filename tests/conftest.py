"""Session fixtures: one real segkit-train run and one in-process train(cfg) call.

Helpers and the tiny overrides are in helpers.py. Everything goes under pytest's tmp dirs.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from helpers import (
    CLI_RUN_OVERRIDES,
    TINY,
    TRAIN_CMD,
    CliRun,
    InProcessRun,
    describe,
    run_cli,
    task_config,
)

# The folder preflight caches its facts per user (~/.cache/segkit); tests and the commands they
# start (which inherit the environment) use a throwaway cache instead.
os.environ["SEGKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="segkit-cache-")

# Under pytest-xdist (the README's test command runs 2 workers), each worker and the commands it
# starts get an equal share of the cores: unshared, torch's threads would oversubscribe them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _threads
    import torch

    torch.set_num_threads(int(_threads))


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """One real ``segkit-train`` run (3 tiny epochs), shared by checkpoint/TensorBoard/eval tests."""
    root = tmp_path_factory.mktemp("cli_train")
    proc = run_cli(TRAIN_CMD, CLI_RUN_OVERRIDES, root)
    assert proc.returncode == 0, describe(proc)
    run_dirs = sorted((root / "logs" / "train" / "runs").iterdir())
    assert len(run_dirs) == 1, f"expected one run directory, found {run_dirs}"
    return CliRun(root=root, run_dir=run_dirs[0], proc=proc)


@pytest.fixture(scope="session")
def inprocess_run(tmp_path_factory: pytest.TempPathFactory) -> InProcessRun:
    """``train(cfg)`` on the tiny config for 2 epochs (fit, then test on the best checkpoint)."""
    from segkit.training.run import train

    output_dir = tmp_path_factory.mktemp("inprocess_train")
    cfg = task_config(
        "train", [*TINY, "trainer.max_epochs=2", f"paths.root_dir={output_dir}"], output_dir
    )
    metrics = train(cfg)
    return InProcessRun(metrics=metrics, output_dir=output_dir, cfg=cfg)


# The longest files first: the README's command spreads files over 2 workers (pytest-xdist,
# --dist loadfile), and a long file that starts last runs alone at the end.
LONG_FILES_FIRST = ("test_notebooks.py", "test_train.py", "test_patch_cnn.py", "test_add_an_architecture.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
