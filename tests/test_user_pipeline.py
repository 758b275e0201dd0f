"""One user's path end to end on 16-bit single-channel TIFFs of odd, varying sizes with
instance masks: segkit-train (preflight, grid of variable-size images, weight map from the
instances), then segkit-predict and segkit-export with the intensity scaling training used."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import EVAL_CMD, QUIET_CALLBACKS, TRAIN_CMD, console_command, describe, run_cli
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from user_data import SIZES, write_nuclei_folder

from segkit.data import FolderDataModule
from segkit.models.loading import load_module

PREDICT_CMD = console_command("segkit-predict", "segkit.cli.predict")
EXPORT_CMD = console_command("segkit-export", "segkit.cli.export")
# Not the default percentiles: predict and export must take them from the checkpoint.
PERCENTILES = [2.0, 98.0]
SCALING = {"mode": "percentile", "percentiles": PERCENTILES, "value_range": None}
DATA = ["data=folder", "data.num_classes=2", "data.in_channels=1", "data.mask_type=instances",
        "data.batch_size=2", "data.num_workers=0", "data.intensity=percentile", f"data.percentiles={PERCENTILES}"]


@pytest.fixture(scope="module")
def nuclei_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data root, run directory)`` of a 6-step run with the weight-map loss."""
    root = write_nuclei_folder(tmp_path_factory.mktemp("nuclei"))
    work = tmp_path_factory.mktemp("nuclei_run")
    overrides = [*DATA, f"data.root={root}", "model.base_width=4", "model.depth=2",
                 "model/loss=weight_map", "model.loss.object_class=1", "model.loss.sigma=3", "trainer.max_steps=6",
                 "trainer.accelerator=cpu", "trainer.devices=1", *QUIET_CALLBACKS]
    proc = run_cli(TRAIN_CMD, overrides, work)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = (work / "logs" / "train" / "runs").iterdir()
    return root, run_dir


def test_training_logs_a_grid_of_the_variable_size_validation_images(nuclei_run: tuple[Path, Path]) -> None:
    _, run_dir = nuclei_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    grids = events.Images("val/predictions")
    assert grids, "no image grid was logged"
    # Two rows (the val images, 45x31 and 33x57, enlarged 6x and 5x to a longer side of at
    # least 256 px: 270x186 and 165x285) of three tiles in 270x285 cells, 2-px padding.
    assert (grids[-1].height, grids[-1].width) == (2 * 272 + 2, 3 * 287 + 2)


def test_the_checkpoint_keeps_the_intensity_scaling(nuclei_run: tuple[Path, Path]) -> None:
    _, run_dir = nuclei_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    stored = checkpoint["segkit_data"]
    assert (stored["mean"], stored["std"], stored["intensity"]) == ([0.5], [0.25], SCALING)


def test_predict_on_a_16_bit_tiff_equals_the_validation_pipeline(nuclei_run: tuple[Path, Path], tmp_path: Path) -> None:
    # Probabilities, not an argmax a 6-step net may keep constant: any difference in scaling shows.
    root, run_dir = nuclei_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    proc = run_cli(PREDICT_CMD, [f"ckpt_path={ckpt}", f"input={root / 'val' / 'images'}", f"output={tmp_path / 'out'}",
                                 "inference.mode=whole", "progress_bar=false", "save.overlay=true",
                                 "save.probabilities=true"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    module = load_module(str(ckpt)).eval()
    data = FolderDataModule(root=str(root), num_classes=2, in_channels=1, mask_type="instances", num_workers=0,
                            intensity="percentile", percentiles=PERCENTILES)
    data.setup("validate")
    for index, (height, width) in enumerate(SIZES["val"]):
        image, _ = data.val_set[index]
        with torch.no_grad():
            expected = module(image[None]).softmax(1)[0].numpy()
        written = np.load(tmp_path / "out" / f"cell{index}_probs.npy").astype(np.float32)
        assert written.shape == (2, height, width)
        np.testing.assert_allclose(written, expected, atol=2e-3)
        with tifffile.TiffFile(tmp_path / "out" / f"cell{index}.tif") as labels:  # TIFF in, label TIFF out
            assert (labels.series[0].axes, labels.series[0].shape) == ("YX", (height, width))
            np.testing.assert_array_equal(labels.asarray(), written.argmax(0))
        assert np.array(Image.open(tmp_path / "out" / f"cell{index}_overlay.png")).shape == (height, width, 3)


def test_export_describes_the_intensity_scaling(nuclei_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run_dir = nuclei_run
    proc = run_cli(EXPORT_CMD, [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "format=torchscript"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (meta,) = (tmp_path / "logs").rglob("export.json")
    assert json.loads(meta.read_text())["intensity"] == SCALING


def test_a_bad_mask_stops_segkit_train_before_the_first_step(tmp_path: Path) -> None:
    root = write_nuclei_folder(tmp_path / "data")
    mask_path = root / "val" / "masks" / "cell1.tif"
    mask = tifffile.imread(mask_path)
    tifffile.imwrite(mask_path, mask.astype(np.float32) + 0.5)  # fractional labels: not a mask
    proc = run_cli(TRAIN_CMD, [*DATA, f"data.root={root}", "trainer.accelerator=cpu", *QUIET_CALLBACKS], tmp_path / "work")
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segkit-train: error:")]
    assert len(errors) == 1 and f"{mask_path}: mask holds fractional values" in errors[0], proc.stderr
    assert not list((tmp_path / "work").rglob("*.ckpt"))  # stopped at setup, before any step


def test_eval_scores_objects_against_every_true_instance(nuclei_run: tuple[Path, Path], tmp_path: Path) -> None:
    root, run_dir = nuclei_run
    proc = run_cli(EVAL_CMD, [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.accelerator=cpu",
                              "trainer.devices=1"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (metrics,) = (tmp_path / "logs").rglob("metrics.json")
    objects = json.loads(metrics.read_text())["val"]["objects"]
    true_objects = [len(np.unique(tifffile.imread(mask)[tifffile.imread(mask) > 0]))
                    for mask in sorted((root / "val" / "masks").glob("*.tif"))]
    assert objects["true"] == sum(true_objects) > 0
    assert 0 <= objects["mean_ap"] <= objects["ap50"] <= objects["f1"] <= 1
    rows = list(csv.DictReader((metrics.parent / "per_image.csv").open()))
    assert sorted(int(row["objects_true"]) for row in rows) == sorted(true_objects)
    assert sum(int(row["objects_predicted"]) for row in rows) == objects["predicted"]
