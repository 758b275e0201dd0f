"""The learning benchmark: the hand-written loop reads every kind of tree as segkit does, and
``segkit-bench learning`` trains both sides on a generated set and reports their scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.benchmarks.hand_loop import class_mask, hand_loop, load_split, scaled_image
from segkit.benchmarks.learning import SET_NAMES, budget, measure_learning
from segkit.benchmarks.userdata import main, write_nuclei_dataset
from segkit.benchmarks.userdata_render import separated_foreground
from segkit.cli.bench import main as bench_main
from segkit.errors import SegkitError

tifffile = pytest.importorskip("tifffile")


def test_16_bit_images_are_scaled_by_their_own_percentiles() -> None:
    raw = np.linspace(400, 27000, 64 * 48).reshape(64, 48).astype(np.uint16)
    image = scaled_image(raw, in_channels=1)
    assert image.shape == (1, 64, 48) and image.dtype == np.float32
    low, high = np.percentile(raw, (1.0, 99.8))
    assert image[0, 0, 0] == pytest.approx((400 - low) / (high - low), abs=1e-5)
    assert np.mean((image >= 0) & (image <= 1)) == pytest.approx(0.988, abs=0.002)


def test_8_bit_grey_is_replicated_to_rgb_and_divided_by_255() -> None:
    raw = np.array([[0, 255], [51, 102]], np.uint8)
    image = scaled_image(raw, in_channels=3)
    assert image.shape == (3, 2, 2)
    assert np.allclose(image[2], [[0, 1], [0.2, 0.4]])


def test_masks_become_classes_as_segkit_reads_each_mask_type() -> None:
    instances = np.zeros((8, 8), np.uint16)
    instances[1:4, 1:7], instances[4:7, 1:7] = 7, 300  # two objects touching along a row
    assert np.array_equal(class_mask(instances, "instances"), separated_foreground(instances))
    assert class_mask(instances, "instances")[3:5, 3].tolist() != [1, 1]  # their border is background
    assert class_mask(np.array([[0, 255]], np.uint8), "binary").tolist() == [[0, 1]]
    assert class_mask(np.array([[3, 255]], np.uint8), "index").tolist() == [[3, 255]]


def test_a_mask_missing_for_an_image_is_named(tmp_path: Path) -> None:
    root = write_nuclei_dataset(tmp_path / "n", train=2, val=1, size=(40, 36))
    (root / "train" / "masks" / "nuclei_0001.tif").unlink()
    with pytest.raises(SegkitError, match="nuclei_0001.tif: no mask named nuclei_0001"):
        load_split(root, "train", 1, "instances")


def test_hand_loop_on_16_bit_instance_masks_scores_both_classes(tmp_path: Path) -> None:
    root = write_nuclei_dataset(tmp_path / "n", train=2, val=1, size=(64, 56))
    result = hand_loop(root, seconds=0, num_classes=2, in_channels=1, mask_type="instances")
    assert result["steps"] == 1 and len(result["per_class_IoU"]) == 2


def test_hand_loop_command_needs_the_class_count_without_classes_txt(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = write_nuclei_dataset(tmp_path / "n", train=1, val=1, size=(40, 36))
    assert main(["hand-loop", str(root), "--seconds", "0", "--in-channels", "1", "--mask-type", "instances"]) == 2
    assert "give --num-classes" in capsys.readouterr().err
    assert main(["hand-loop", str(root), "--seconds", "0", "--in-channels", "1", "--mask-type", "instances",
                 "--num-classes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1


def test_the_budget_is_lightnings_max_time_format() -> None:
    assert budget(120) == "00:00:02:00" and budget(3725) == "00:01:02:05"


def test_unknown_sets_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(SegkitError, match="unknown learning set 'voc'"):
        measure_learning(tmp_path, seconds=1, names=["voc"])
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_learning_benchmark_trains_both_sides_in_the_same_seconds(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "learning.json"
    assert bench_main(["learning", "--learning-sets", "em", "--learning-seconds", "4", "--learning-dir",
                       str(tmp_path / "work"), "--override", "data.num_workers=0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["learning"]["results"][0]
    assert result["set_name"] == "em" and result["seconds"] == 4
    assert 0 < result["segkit_miou"] <= 1 and 0 < result["hand_miou"] <= 1
    assert result["segkit_steps"] >= 1 and result["hand_steps"] >= 1
    run = tmp_path / "work" / "runs" / "em-segkit"
    assert "++trainer.max_time=00:00:00:04" in json.loads((run / "metrics.json").read_text())["overrides"]
    images = sorted((tmp_path / "work" / "data" / "em" / "train" / "images").glob("*.png"))
    assert len(images) == 24 and Image.open(images[0]).mode == "L"
    assert "em" in capsys.readouterr().out and "em" in SET_NAMES
