"""``segkit-data``: the audit of a data=folder tree (segkit.data.files.audit + segkit.cli.data)."""

from __future__ import annotations

import doctest
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from user_data import (
    SIZES,
    binary_masks,
    index_masks,
    write_masks_folder,
    write_nuclei_folder,
)

from segkit.cli import data as cli
from segkit.data.files import audit
from segkit.data.modules.folder import auto_crop_size
from segkit.data.files.folder_index import LAYOUT
from segkit.data.files.masks import MASK_TYPES, MaskDecoder
from segkit.data.files.preflight import collect_facts, scan_pairs
from segkit.errors import SegkitError


def audit_of(capsys: pytest.CaptureFixture[str], root: Path, out: Path, *options: str) -> tuple[int, dict, str, str]:
    """``(exit status, audit.json, stdout, stderr)`` of ``segkit-data root --out out options``."""
    code = cli.main([str(root), "--out", str(out), "--no-progress", *options])
    captured = capsys.readouterr()
    report = json.loads(out.read_text()) if code != 2 else {}
    return code, report, captured.out, captured.err


def test_an_index_data_set_is_counted_measured_and_given_its_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root = write_masks_folder(tmp_path / "data", index_masks(classes=4, absent_from_val=3))
    code, report, out, err = audit_of(capsys, root, tmp_path / "audit.json")
    assert code == 0 and err == ""
    splits = report["splits"]
    assert {name: split["pairs"] for name, split in splits.items()} == {"train": 3, "val": 2, "test": 1}
    heights = [height for height, _ in SIZES["train"]]
    assert splits["train"]["height"] == {"min": min(heights), "median": int(np.median(heights)), "max": max(heights)}
    assert splits["train"]["channels"] == {"3": 3} and splits["train"]["dtypes"] == {"uint8": 3}
    assert len(splits["train"]["intensity"]) == 3
    assert splits["val"]["absent_classes"] == [3] and splits["train"]["absent_classes"] == []
    assert "class 3 absent from val" in out
    assert 0.04 < splits["train"]["ignored_fraction"] < 0.08  # the 2-row band of 255
    assert sum(splits["train"]["class_fraction"]) == pytest.approx(1.0, abs=1e-4)
    suggestions = report["suggestions"]
    assert suggestions["data.num_classes"]["value"] == 4  # 255 (ignored) is no class
    assert suggestions["data.crop_size"]["value"] == auto_crop_size(SIZES["train"]) == 32
    assert suggestions["data.mask_type"]["value"] == "index" and suggestions["data.in_channels"]["value"] == 3
    weights = suggestions["model.loss.class_weights"]["value"]
    fractions = np.array(splits["train"]["class_fraction"])
    assert weights == pytest.approx(np.median(fractions) / fractions, abs=1e-3)  # median frequency balancing
    command = f"segkit-train data=folder data.root={root} data.num_classes=4 data.crop_size=32"
    assert suggestions["command"] == command and command in out
    codes = {warning["code"] for warning in report["warnings"]}
    assert "small_images" in codes and not codes & {"binary_trap", "instance_ids", "absent_from_train"}
    assert report["errors"] == [] and len(report["files"]) == 6
    assert report["files"][0]["class_pixels"].keys() == {"0", "1", "2", "3"}


def test_0_255_masks_are_warned_of_and_binary_suggested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_masks_folder(tmp_path / "data", binary_masks(255))
    code, report, out, _ = audit_of(capsys, root, tmp_path / "audit.json")
    assert code == 0
    assert [w["code"] for w in report["warnings"]][0] == "binary_trap"
    assert re.search(r"masks hold only 0 and 255.*--mask-type binary", " ".join(out.split()))
    assert report["suggestions"]["data.mask_type"]["value"] == "binary"
    assert "data.num_classes=2 data.mask_type=binary" in report["suggestions"]["command"]
    code, report, _, _ = audit_of(capsys, root, tmp_path / "audit.json", "--mask-type", "binary", "--overwrite")
    assert "binary_trap" not in {w["code"] for w in report["warnings"]}
    assert 0.2 < report["splits"]["train"]["class_fraction"][1] < 0.3  # half the sides: a quarter


def test_16_bit_instance_tiffs_suggest_instances_and_note_the_bit_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root = write_nuclei_folder(tmp_path / "data")
    code, report, out, _ = audit_of(capsys, root, tmp_path / "audit.json")
    assert code == 0
    warnings = {w["code"]: w["message"] for w in report["warnings"]}
    assert "uint16" in warnings["instance_ids"] and "uint16" in warnings["bit_depth"]
    assert "percentile" in warnings["bit_depth"] and "--mask-type instances" in " ".join(out.split())
    suggestions = report["suggestions"]
    assert suggestions["data.mask_type"]["value"] == "instances" and suggestions["data.num_classes"]["value"] == 2
    assert suggestions["data.in_channels"]["value"] == 1
    assert "data.mask_type=instances data.in_channels=1" in suggestions["command"]
    code, report, out, _ = audit_of(capsys, root, tmp_path / "audit.json", "--mask-type", "instances", "--overwrite")
    assert report["splits"]["train"]["objects_per_image"] == {"min": 3, "median": 3, "max": 3, "total": 9}
    assert report["splits"]["train"]["dtypes"] == {"uint16": 3} and "objects per image" in out
    assert "instance_ids" not in {w["code"] for w in report["warnings"]}


def test_colour_masks_read_as_indices_are_bad_files_and_colors_is_suggested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    masks = {split: [np.stack([m * 200, m * 50, m * 90], -1) for m in arrays]
             for split, arrays in binary_masks(1).items()}
    root = write_masks_folder(tmp_path / "data", masks)
    code, report, _, err = audit_of(capsys, root, tmp_path / "audit.json")
    assert code == 1 and len(report["errors"]) == 5 and err.count("\n") == 5
    assert report["suggestions"]["data.mask_type"]["value"] == "colors"
    (root / "classes.txt").write_text("background 0 0 0\nobject 200 50 90\n")
    code, report, _, _ = audit_of(capsys, root, tmp_path / "audit.json", "--mask-type", "colors", "--overwrite")
    assert code == 0 and report["suggestions"]["data.num_classes"]["value"] == 2
    assert report["class_names"] == ["class 0 (background)", "class 1 (object)"]


def damaged_folder(root: Path) -> tuple[Path, Path]:
    """An index data set with a truncated image and a mask of the wrong size: both paths."""
    write_masks_folder(root, index_masks())
    truncated = root / "train" / "images" / "s1.png"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    bad_size = root / "val" / "masks" / "s0.png"
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(bad_size)
    return truncated, bad_size


def test_every_bad_file_is_listed_on_one_line_and_the_exit_status_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    truncated, bad_size = damaged_folder(tmp_path / "data")
    code, report, out, err = audit_of(capsys, tmp_path / "data", tmp_path / "audit.json")
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 2 and str(truncated) in lines[0] and "truncated" in lines[0]
    assert str(bad_size) in lines[1] and "31x45" in lines[1]
    assert [e["image"] for e in report["errors"]] == [str(truncated), str(tmp_path / "data/val/images/s0.png")]
    assert report["errors"][1]["mask"] == str(bad_size) and str(bad_size) in report["errors"][1]["error"]
    assert report["splits"]["train"] == {**report["splits"]["train"], "pairs": 3, "bad": 1}
    assert len(report["files"]) == 4 and "2 bad pair(s) of 6" in out


def test_the_console_script_answers_a_missing_root_with_one_line_and_status_2(tmp_path: Path) -> None:
    script = shutil.which("segkit-data") or str(Path(sys.executable).parent / "segkit-data")
    done = subprocess.run([script, "nowhere"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    expected = f"segkit-data: error: nowhere: no such directory; pass the folder holding {LAYOUT} (test/ is optional)"
    assert done.stderr == expected + "\n"
    assert not (tmp_path / "audit.json").exists()


def test_the_cli_repeats_the_mask_types_and_layout_of_the_data_package() -> None:
    assert cli.MASK_TYPES == MASK_TYPES and cli.LAYOUT == LAYOUT


def test_scan_pairs_still_stops_at_the_first_bad_file_collect_facts_keeps_all(tmp_path: Path) -> None:
    damaged_folder(tmp_path / "data")
    pairs = [p for split in ("train", "val") for p in audit.find_pairs(tmp_path / "data", split)]
    with pytest.raises(SegkitError, match=r"train/images/s1.png: unreadable.*\(and 1 more bad pair"):
        scan_pairs(pairs, None, MaskDecoder(), progress=False)
    facts, errors = collect_facts(pairs, None, MaskDecoder(), progress=False)
    assert sorted(errors) == [1, 3] and [f is None for f in facts] == [False, True, False, True, False]


def test_an_existing_report_is_kept_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_masks_folder(tmp_path / "data", binary_masks(1))
    out = tmp_path / "audit.json"
    out.write_text("mine")
    code, _, _, err = audit_of(capsys, root, out)
    assert code == 2 and out.read_text() == "mine"
    assert err.count("\n") == 1 and re.match(r"segkit-data: error: .*audit.json exists; pass --overwrite", err)
    code, report, _, _ = audit_of(capsys, root, out, "--overwrite")
    assert code == 0 and report["suggestions"]["data.num_classes"]["value"] == 2
    assert not list(tmp_path.glob(".audit.json.*"))  # no temp file left


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        (["{tmp}/nowhere"], r"nowhere: no such directory; pass the folder holding"),
        (["{tmp}", "--mask-type", "labels"], r"argument --mask-type: invalid choice: 'labels'"),
        (["{tmp}", "--num-classes", "1"], r"--num-classes 1: needs at least 2"),
        (["{tmp}/data", "--mask-type", "colors"], r"data.mask_type=colors needs a palette"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], pattern: str,
) -> None:
    write_masks_folder(tmp_path / "data", binary_masks(1))
    code = cli.main([a.format(tmp=tmp_path) for a in arguments] + ["--out", str(tmp_path / "audit.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("segkit-data: error: ")
    assert re.search(pattern, err) and not (tmp_path / "audit.json").exists()


@pytest.mark.parametrize("module", [audit, cli])
def test_docstring_examples_run(module: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_a_mask_that_breaks_the_decoder_is_one_more_bad_pair_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    masks = {split: [mask.astype(np.int16) for mask in arrays] for split, arrays in binary_masks(1).items()}
    masks["train"][0][0, 0] = -1
    root = write_masks_folder(tmp_path / "data", masks, suffix=".tif")
    code, report, _, err = audit_of(capsys, root, tmp_path / "audit.json")
    assert code == 1 and [e["mask"] for e in report["errors"]] == [str(root / "train" / "masks" / "s0.tif")]
    assert err.count("\n") == 1 and "s0.tif" in err
