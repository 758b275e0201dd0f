"""Seeing results: per-image scores and figures of segkit-eval, the test figures segkit-train
logs to TensorBoard, and the readable image grid of validation.

Hand-made masks with known counts check the per-image confusion matrices; segkit-eval on the
shared tiny run and on folder data of odd, differing sizes checks the files it writes.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import (
    CPU,
    EVAL_CMD,
    QUIET_CALLBACKS,
    TINY_MODEL,
    CliRun,
    InProcessRun,
    describe,
    run_cli,
    task_config,
)
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from user_data import write_masks_folder

from segkit.cli.eval import evaluate
from segkit.data.synthetic.shapes_render import SHAPES_CLASS_NAMES
from segkit.scoring.eval_files import write_eval_files
from segkit.scoring.figures import figure_to_array
from segkit.scoring.gallery import IGNORE_COLOUR, gallery_figure, mask_colours
from segkit.scoring.per_image import (
    PerImageTable,
    confusion_per_image,
    image_scores,
    read_per_image_npz,
)
from segkit.training.callbacks import SegmentationImageLogger, upscale_tile
from segkit.training.per_image import PerImageScores
from segkit.training.run import train

OUTPUT_FILES = ("metrics.json", "confusion_matrix.png", "per_class_iou.png", "per_image.csv",
                "per_image_confusion.npz", "worst_images.png")

# --- three hand-made 2x3 images, 3 classes, 255 ignored --------------------------------------
# A: class 2 absent from the truth, predicted only on an ignored pixel (so not counted).
# B: class 1 absent from truth and prediction. C: every pixel ignored.
TRUTH = torch.tensor([[[0, 0, 1], [255, 1, 1]],
                      [[2, 2, 0], [2, 255, 255]],
                      [[255, 255, 255], [255, 255, 255]]])
PRED = torch.tensor([[[0, 1, 1], [2, 1, 0]],
                     [[2, 0, 0], [2, 1, 1]],
                     [[0, 1, 2], [0, 1, 2]]])
# Counted by hand, pixel by pixel (rows = truth, columns = prediction).
HAND_A = [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
HAND_B = [[1, 0, 0], [0, 0, 0], [1, 0, 2]]
HAND_C = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
HAND_TOTAL = [[2, 1, 0], [1, 2, 0], [1, 0, 2]]
# A: IoU(0) = 1 / (2 + 2 - 1), IoU(1) = 2 / (3 + 3 - 2), class 2 absent; 3 of 5 pixels right.
# B: IoU(0) = 1 / (1 + 2 - 1), IoU(2) = 2 / (3 + 2 - 2), class 1 absent; 3 of 4 pixels right.
HAND_MIOU = [(1 / 3 + 1 / 2) / 2, (1 / 2 + 2 / 3) / 2]
HAND_ACC = [3 / 5, 3 / 4]


def test_per_image_confusion_of_hand_made_masks() -> None:
    confusion = confusion_per_image(PRED, TRUTH, num_classes=3, ignore_index=255)
    assert confusion.dtype == torch.int64
    assert confusion.tolist() == [HAND_A, HAND_B, HAND_C]
    assert confusion.sum(dim=0).tolist() == HAND_TOTAL


def test_per_image_miou_and_pixel_accuracy_of_hand_made_masks() -> None:
    miou, acc = image_scores(np.array([HAND_A, HAND_B, HAND_C]))
    assert miou[:2].tolist() == pytest.approx(HAND_MIOU, abs=1e-12)
    assert acc[:2].tolist() == pytest.approx(HAND_ACC, abs=1e-12)
    assert math.isnan(miou[2]) and math.isnan(acc[2])  # nothing scored: no score


def fed_callback(worst_k: int) -> PerImageScores:
    """A PerImageScores fed the hand-made images as two steps' outputs (as a loop would)."""
    scores = PerImageScores(num_classes=3, ignore_index=255, worst_k=worst_k)
    images = torch.arange(3 * 6, dtype=torch.float32).view(3, 1, 2, 3)
    for part in (slice(0, 2), slice(2, 3)):
        outputs = {"preds": PRED[part], "masks": TRUTH[part]}
        scores.update(None, outputs, (images[part], TRUTH[part]))  # type: ignore[arg-type]
    scores.finish()
    return scores


def test_the_callback_sums_its_per_image_matrices_to_the_global_one_and_keeps_the_worst() -> None:
    scores = fed_callback(worst_k=1)
    assert scores.table is not None
    assert scores.table.confusion.tolist() == [HAND_A, HAND_B, HAND_C]
    assert scores.table.files == ["#0", "#1", "#2"]
    assert scores.total.tolist() == HAND_TOTAL
    # A (5/12) is worse than B (7/12); C has no score and is never "worst".
    assert [(kept.index, kept.miou) for kept in scores.worst] == [(0, pytest.approx(HAND_MIOU[0]))]
    assert torch.equal(scores.worst[0].truth, TRUTH[0]) and torch.equal(scores.worst[0].prediction, PRED[0])
    assert [kept.index for kept in fed_callback(worst_k=5).worst] == [0, 1]


def test_per_image_files_are_sorted_by_index_and_sum_to_the_total(tmp_path: Path) -> None:
    table = PerImageTable([2, 0, 1], ["c.png", "a.png", "b.png"], np.array([HAND_C, HAND_A, HAND_B]))
    table.write_csv(tmp_path / "per_image.csv")
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert [(r["index"], r["file"]) for r in rows] == [("0", "a.png"), ("1", "b.png"), ("2", "c.png")]
    assert [float(r["mIoU"]) for r in rows[:2]] == pytest.approx(HAND_MIOU)
    assert [float(r["pixel_acc"]) for r in rows[:2]] == pytest.approx(HAND_ACC)
    assert math.isnan(float(rows[2]["mIoU"]))
    table.write_npz(tmp_path / "per_image_confusion.npz")
    confusion, files = read_per_image_npz(tmp_path / "per_image_confusion.npz")
    assert confusion.dtype == np.int64 and confusion.shape == (3, 3, 3)
    assert files == ["a.png", "b.png", "c.png"]
    assert confusion.sum(axis=0).tolist() == HAND_TOTAL


def test_ignored_pixels_have_a_colour_of_their_own() -> None:
    colours = mask_colours(TRUTH[0])
    assert colours[1, 0].tolist() == list(IGNORE_COLOUR)
    assert all(colours[r, c].tolist() != list(IGNORE_COLOUR) for r in range(2) for c in range(3) if (r, c) != (1, 0))
    # Another ignore index: 0 is ignored, 255 then is nothing special.
    assert mask_colours(torch.tensor([[0, 1]]), ignore_index=0)[0, 0].tolist() == list(IGNORE_COLOUR)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_gallery_has_one_row_of_three_tiles_per_image_and_grows_with_k(channels: int) -> None:
    def row(n: int) -> SimpleNamespace:
        truth = torch.randint(0, 3, (9, 13))
        truth[4] = 255
        return SimpleNamespace(image=torch.randn(channels, 9, 13), truth=truth, prediction=torch.randint(0, 3, (9, 13)),
                               file=f"img{n}.png", miou=0.1 * n)
    heights = []
    for k in (1, 4):
        figure = gallery_figure([row(n) for n in range(k)], ["a", "b", "c"], "worst")
        assert len(figure.axes) == 3 * k
        assert figure.axes[0].get_ylabel().startswith("img0.png")
        heights.append(figure_to_array(figure).shape[0])
    assert heights[1] > 2 * heights[0]


# --- segkit-eval on the shared tiny training run ---------------------------------------------

WORST_K = 3


@pytest.fixture(scope="module")
def eval_dir(cli_run: CliRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``segkit-eval ... split=test figures.worst_k=3`` of the shared run: (its output dir, stdout)."""
    root = tmp_path_factory.mktemp("eval_figures")
    proc = run_cli(EVAL_CMD, [f"ckpt_path={cli_run.last_ckpt}", "split=test", f"figures.worst_k={WORST_K}", *CPU], root)
    assert proc.returncode == 0, describe(proc)
    (metrics,) = (root / "logs" / "eval" / "runs").glob("*/metrics.json")
    return metrics.parent, proc.stdout


@pytest.mark.timeout(300)
def test_eval_writes_every_file_and_names_each_on_a_line(eval_dir: tuple[Path, str]) -> None:
    directory, stdout = eval_dir
    for name in OUTPUT_FILES:
        assert (directory / name).is_file(), name
        assert f"wrote {directory / name}" in stdout.splitlines(), name


@pytest.mark.timeout(300)
def test_metrics_json_confusion_matrix_agrees_with_its_scores(eval_dir: tuple[Path, str], cli_run: CliRun) -> None:
    metrics = json.loads((eval_dir[0] / "metrics.json").read_text())
    assert metrics["class_names"] == list(SHAPES_CLASS_NAMES)
    matrix = metrics["confusion_matrix"]
    k = len(SHAPES_CLASS_NAMES)
    assert len(matrix) == k and all(len(row) == k and all(isinstance(v, int) for v in row) for row in matrix)
    counts = np.array(matrix)
    total = counts.sum()
    assert 0 < total <= 8 * 32 * 32  # the 8 test scenes of 32x32, ignored pixels left out
    assert np.trace(counts) / total == pytest.approx(metrics["test"]["pixel_acc"], abs=1e-9)
    for c, name in enumerate(SHAPES_CLASS_NAMES):
        union = counts[c].sum() + counts[:, c].sum() - counts[c, c]
        iou = metrics["test"]["IoU"][name]
        assert (union == 0 and math.isnan(iou)) or counts[c, c] / union == pytest.approx(iou, abs=1e-9), name


@pytest.mark.timeout(300)
def test_per_image_files_have_one_entry_per_test_image_and_sum_to_the_matrix(eval_dir: tuple[Path, str]) -> None:
    directory = eval_dir[0]
    rows = list(csv.DictReader((directory / "per_image.csv").open()))
    assert list(rows[0]) == ["index", "file", "mIoU", "pixel_acc"]
    assert [int(r["index"]) for r in rows] == list(range(8))
    assert [r["file"] for r in rows] == [f"#{i}" for i in range(8)]  # rendered scenes have no file
    assert all(0.0 <= float(r["mIoU"]) <= 1.0 and 0.0 <= float(r["pixel_acc"]) <= 1.0 for r in rows)
    confusion, files = read_per_image_npz(directory / "per_image_confusion.npz")
    assert confusion.shape == (8, len(SHAPES_CLASS_NAMES), len(SHAPES_CLASS_NAMES)) and confusion.dtype == np.int64
    assert files == [r["file"] for r in rows]
    metrics = json.loads((directory / "metrics.json").read_text())
    assert confusion.sum(axis=0).tolist() == metrics["confusion_matrix"]  # exactly


@pytest.mark.timeout(300)
def test_the_pngs_open_and_the_gallery_has_k_rows(eval_dir: tuple[Path, str]) -> None:
    directory = eval_dir[0]
    for name in ("confusion_matrix.png", "per_class_iou.png", "worst_images.png"):
        with Image.open(directory / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300, (name, image.size)
    single = gallery_figure([SimpleNamespace(image=torch.rand(3, 32, 32), truth=TRUTH[0], prediction=PRED[0],
                                             file="x", miou=0.5)], ["a", "b", "c"], "one")
    one_row_height = figure_to_array(single).shape[0]
    with Image.open(directory / "worst_images.png") as gallery:
        # 3 rows of 2.6-inch tiles at 100 dpi, and titles: well over twice one row's figure.
        assert gallery.height > 2 * one_row_height
        assert gallery.height == round(100 * (WORST_K * 2.6 + 1.5))


def test_write_eval_files_skips_the_gallery_without_worst_images(tmp_path: Path) -> None:
    table = PerImageTable([0, 1, 2], ["a", "b", "c"], np.array([HAND_A, HAND_B, HAND_C]))
    written = write_eval_files(tmp_path, table, None, ["x", "y", "z"], "val")
    assert [p.name for p in written] == list(OUTPUT_FILES[1:5])
    assert not (tmp_path / "worst_images.png").exists()


# --- segkit-eval on folder data of odd, differing sizes (batches of one) ---------------------

VAL_SIZES = [(45, 31), (33, 57), (27, 39)]


def band_mask(height: int, width: int, classes: int = 3) -> np.ndarray:
    """Vertical bands of classes 0..classes-1 and a 2-row ignored (255) band."""
    mask = (np.arange(width)[None, :] * classes // width).repeat(height, axis=0).astype(np.uint8)
    mask[height // 2: height // 2 + 2] = 255
    return mask


@pytest.mark.timeout(300)
def test_eval_on_images_of_different_odd_sizes(tmp_path: Path) -> None:
    root = write_masks_folder(tmp_path / "data", {
        "train": [band_mask(37, 53), band_mask(48, 41)],
        "val": [band_mask(h, w) for h, w in VAL_SIZES],
    })
    data = ["data=folder", f"data.root={root}", "data.num_classes=3", "data.num_workers=0", "data.batch_size=2"]
    run_dir = tmp_path / "run"
    cfg = task_config("train", [*data, *TINY_MODEL, *QUIET_CALLBACKS, *CPU, "trainer.max_steps=2",
                                "test=false", f"paths.root_dir={tmp_path}"], run_dir)
    train(cfg)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    out = tmp_path / "eval"
    result = evaluate(task_config("eval", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *CPU], out))
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["file"] for r in rows] == ["s0.png", "s1.png", "s2.png"]
    confusion, _ = read_per_image_npz(out / "per_image_confusion.npz")
    # Every non-ignored pixel of each image, counted in its own matrix.
    assert [int(c.sum()) for c in confusion] == [h * w - 2 * w for h, w in VAL_SIZES]
    assert confusion.sum(axis=0).tolist() == result["confusion_matrix"]
    with Image.open(out / "worst_images.png") as gallery:
        assert gallery.height == round(100 * (len(VAL_SIZES) * 2.6 + 1.5))  # worst_k 8 > 3 images


# --- the TensorBoard figures of segkit-train's test, and the validation grid ----------------


def test_training_logs_the_test_figures_to_tensorboard(inprocess_run: InProcessRun) -> None:
    events = EventAccumulator(str(inprocess_run.output_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = events.Tags()["images"]
    for tag in ("test/confusion_matrix", "test/per_class_IoU", "test/worst_images"):
        assert tag in images, images
        (logged,) = events.Images(tag)
        assert logged.width >= 300 and logged.height >= 300


def test_test_figures_do_nothing_without_tensorboard() -> None:
    from segkit.training.score_figures import TestFigures

    callback = TestFigures()
    no_logger = SimpleNamespace(loggers=[], sanity_checking=False)
    assert not callback.active(no_logger, "test")  # type: ignore[arg-type]


def test_small_tiles_are_enlarged_by_nearest_to_256_px_and_large_ones_kept() -> None:
    tile = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    big = upscale_tile(tile, 256)
    assert big.shape == (3, 256, 256)
    # Every 4x4 block is one source pixel.
    assert torch.equal(big.view(3, 64, 4, 64, 4), tile[:, :, None, :, None].expand(3, 64, 4, 64, 4))
    large = torch.randint(0, 256, (3, 300, 300), dtype=torch.uint8)
    assert torch.equal(upscale_tile(large, 256), large)


def test_the_grid_of_a_64_px_image_and_its_overlay_column() -> None:
    image = torch.zeros(1, 64, 64)
    image[:, :, 32:] = 1.0  # left half shown black, right half white
    mask = torch.zeros(64, 64, dtype=torch.long)
    prediction = torch.ones(64, 64, dtype=torch.long)  # class 1: VOC colour (128, 0, 0)
    plain = SegmentationImageLogger(min_tile_size=256)
    grid = plain.grid([plain.row(image, mask, prediction)])
    assert tuple(grid.shape) == (3, 256 + 4, 3 * (256 + 2) + 2)
    blended = SegmentationImageLogger(min_tile_size=256, overlay=True)
    grid4 = blended.grid([blended.row(image, mask, prediction)])
    assert tuple(grid4.shape) == (3, 256 + 4, 4 * (256 + 2) + 2)
    assert torch.equal(grid4[:, :, : grid.shape[-1]], grid)  # the first three tiles are unchanged
    fourth = grid4[:, 2:258, 3 * 258 + 2: 4 * 258]
    # Half of (128, 0, 0) over black, and over white (255): (64, 0, 0) and (192, 128, 128).
    assert fourth[:, 0, 0].tolist() == [64, 0, 0]
    assert fourth[:, 0, -1].tolist() == [192, 128, 128]


def test_the_grid_shows_validations_own_predictions_of_its_first_images(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger

    from segkit.palette import colorize

    logger = TensorBoardLogger(tmp_path, name="", version="")
    logged: list[torch.Tensor] = []
    logger.experiment.add_image = lambda tag, grid, global_step: logged.append(grid)  # type: ignore[method-assign]
    trainer = SimpleNamespace(loggers=[logger], sanity_checking=False, is_global_zero=True, global_step=5)
    callback = SegmentationImageLogger(num_images=3, min_tile_size=8)
    callback.on_validation_epoch_start(trainer, None)  # type: ignore[arg-type]
    for batch_idx in range(3):  # batches of 2 images, 8 x 8; predictions k everywhere in batch k
        images, masks = torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
        outputs = {"preds": torch.full((2, 8, 8), batch_idx + 1), "masks": masks}
        callback.on_validation_batch_end(trainer, None, outputs, (images, masks), batch_idx)  # type: ignore[arg-type]
    callback.on_validation_epoch_end(trainer, None)  # type: ignore[arg-type]
    (grid,) = logged
    assert tuple(grid.shape) == (3, 3 * (8 + 2) + 2, 3 * (8 + 2) + 2)  # 3 rows: batch 0's two, batch 1's first
    for row, label in enumerate([1, 1, 2]):
        prediction_tile = grid[:, 2 + row * 10: 10 + row * 10, 22:30]
        assert torch.equal(prediction_tile, colorize(torch.full((8, 8), label)).expand_as(prediction_tile))
