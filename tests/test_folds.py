"""k-fold cross-validation (``data.folds=K``, ``data.fold=k``), as a specification.

On a folder tree shaped like users' data (odd, varying sizes; 8-bit RGB PNGs and 16-bit grey
TIFFs; an ignore band; a class held by only 3 images): the pool (train/ + val/) is divided into
K disjoint parts that cover it, differ in size by at most one, depend on the files' names and
classes only, and spread the rare class over the folds; fold k validates on part k and trains on
the rest; test/ is untouched. Then ISBI and VOC, the errors, and segkit-report over a fold sweep.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import CPU, QUIET_CALLBACKS, TRAIN_CMD, assert_one_line_error, describe, run_cli, run_in_process
from PIL import Image

import segkit.cli.train
from segkit.cli.report import main as report_main
from segkit.contracts.fake_data import FAKE_VOC_SPLITS, make_fake_isbi, make_fake_voc
from segkit.data import FolderDataModule, ISBI2012DataModule, PatchDataModule, VOCDataModule
from segkit.data.files.pairs import PairDataset
from segkit.data.folds import assign_folds
from segkit.errors import SegkitError

# (height, width) per image: odd and varying. train/ 7, val/ 3, test/ 2.
SIZES = {"train": [(37, 53), (48, 41), (29, 66), (45, 31), (33, 57), (51, 39), (40, 40)],
         "val": [(35, 61), (47, 29), (31, 45)], "test": [(43, 37), (39, 50)]}
RARE = 3  # the class held by only train/t2, train/t5 and val/v1
HOLDS_RARE = {"train/images/t2.png", "train/images/t5.tif", "val/images/v1.tif"}


def mask_of(height: int, width: int, classes: list[int]) -> np.ndarray:
    """Vertical bands of ``classes`` and a 2-row ignore band (255) across the middle."""
    bands = np.asarray(classes, np.uint8)[np.arange(width) * len(classes) // width]
    mask = np.repeat(bands[None], height, axis=0)
    mask[height // 2: height // 2 + 2] = 255
    return mask


def write_user_folder(root: Path, test: bool = True) -> Path:
    """Even images 8-bit RGB PNGs with PNG masks, odd ones 16-bit grey TIFFs with 16-bit TIFF
    masks; classes 0-2 common, class 3 in three images, one image of background only."""
    rng = np.random.default_rng(0)
    for split, sizes in SIZES.items():
        if split == "test" and not test:
            continue
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for n, (height, width) in enumerate(sizes):
            name = f"{split[0]}{n}"
            rare = f"{split}/{name}" in ("train/t2", "train/t5", "val/v1")
            classes = [0] if n == 6 else [0, 1, 2, RARE] if rare else [0, 1 + n % 2, 2]
            mask = mask_of(height, width, classes)
            images, masks = root / split / "images", root / split / "masks"
            if n % 2 == 0:
                Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(images / f"{name}.png")
                Image.fromarray(mask).save(masks / f"{name}.png")
            else:
                tifffile.imwrite(images / f"{name}.tif", rng.integers(0, 40000, (height, width), dtype=np.uint16))
                tifffile.imwrite(masks / f"{name}.tif", mask.astype(np.uint16))
    return root


@pytest.fixture(scope="module")
def user_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_folder(tmp_path_factory.mktemp("cv") / "data")


def folder(root: Path, **options: object) -> FolderDataModule:
    dm = FolderDataModule(str(root), 4, batch_size=2, num_workers=0, **options)  # type: ignore[arg-type]
    dm.setup("fit")
    dm.setup("test")
    return dm


def names(dataset: PairDataset, root: Path) -> list[str]:
    """The images of a folder data set, by path under ``root``."""
    return [Path(image).relative_to(root.absolute()).as_posix() for image, _ in dataset.pairs]


def pool_of(root: Path) -> set[str]:
    return {f"{split}/images/{p.name}" for split in ("train", "val") for p in (root / split / "images").iterdir()}


@pytest.mark.parametrize("folds", [2, 3, 4, 10])
def test_the_folds_are_disjoint_cover_the_pool_and_differ_in_size_by_at_most_one(user_root: Path, folds: int) -> None:
    parts = [names(folder(user_root, folds=folds, fold=k).val_set, user_root) for k in range(folds)]
    assert sum(len(part) for part in parts) == len(set().union(*parts)) == 10  # disjoint
    assert set().union(*parts) == pool_of(user_root)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_fold_trains_on_the_pool_without_its_validation_images(user_root: Path) -> None:
    for k in range(3):
        dm = folder(user_root, folds=3, fold=k)
        train, val = names(dm.train_set, user_root), names(dm.val_set, user_root)
        assert not set(train) & set(val)
        assert set(train) | set(val) == pool_of(user_root)


def test_the_test_split_is_untouched(user_root: Path) -> None:
    plain = names(folder(user_root).test_set, user_root)
    assert plain == ["test/images/t0.png", "test/images/t1.tif"]
    for k in range(3):
        assert names(folder(user_root, folds=3, fold=k).test_set, user_root) == plain


def test_without_test_the_pool_is_train_and_test_keeps_reading_val(tmp_path: Path) -> None:
    root = write_user_folder(tmp_path / "data", test=False)
    dm = folder(root, folds=3, fold=1)
    assert set(names(dm.train_set, root)) | set(names(dm.val_set, root)) == {
        f"train/images/{p.name}" for p in (root / "train" / "images").iterdir()}
    assert names(dm.test_set, root) == names(folder(root).val_set, root)  # val/, as without folds


def test_the_rare_class_lands_in_different_folds(user_root: Path) -> None:
    fold_of = {name: k for k in range(3) for name in names(folder(user_root, folds=3, fold=k).val_set, user_root)}
    assert sorted(fold_of[name] for name in HOLDS_RARE) == [0, 1, 2]
    # Whatever the names (a plain shuffle would put two of them together in most of these pools).
    rng = random.Random(0)
    for _ in range(20):
        pool = [f"img_{rng.randrange(10**6)}.png" for _ in range(30)]
        classes = [{0, 1, 2} for _ in pool]
        for index in (3, 17, 21, 28):  # class 4 in 4 images, class 3 in another 5
            classes[index].add(4)
        for index in (1, 5, 9, 12, 25):
            classes[index].add(3)
        assigned = assign_folds(pool, classes, 5)
        assert len({assigned[i] for i in (3, 17, 21, 28)}) == 4
        assert len({assigned[i] for i in (1, 5, 9, 12, 25)}) == 5


def test_the_folds_depend_on_file_names_and_classes_only(user_root: Path, tmp_path: Path) -> None:
    # The same files elsewhere (another machine, another mount point): the same folds.
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(user_root, moved)
    for k in range(3):
        here, there = folder(user_root, folds=3, fold=k), folder(moved, folds=3, fold=k)
        assert names(there.val_set, moved) == names(here.val_set, user_root)
    # Any listing order, any global seed (a seed sweep over the folds keeps the folds).
    pool = sorted(pool_of(user_root))
    classes = [{0, 1} if "1" in name else {0, 2} for name in pool]
    expected = dict(zip(pool, assign_folds(pool, classes, 4)))
    for seed in range(5):
        random.seed(seed)
        np.random.seed(seed)
        order = random.sample(range(len(pool)), len(pool))
        listed = [pool[i] for i in order]
        assert dict(zip(listed, assign_folds(listed, [classes[i] for i in order], 4))) == expected


@pytest.mark.parametrize("validate", ["header", "lazy"])
def test_the_folds_do_not_depend_on_how_files_are_validated(user_root: Path, validate: str) -> None:
    # Classes come from the preflight's facts under validate=full, from the masks read once otherwise.
    for k in range(3):
        full = folder(user_root, folds=3, fold=k)
        other = folder(user_root, folds=3, fold=k, validate=validate)
        assert names(other.val_set, user_root) == names(full.val_set, user_root)


def test_isbi_folds_divide_the_training_slices_and_keep_the_held_out_slices_for_test(tmp_path: Path) -> None:
    root = make_fake_isbi(tmp_path / "isbi", pages=6, size=(37, 45))
    parts = []
    for k in range(3):
        dm = ISBI2012DataModule(root=str(root), val_slices=[5], num_workers=0, folds=3, fold=k)
        dm.setup("fit")
        assert dm.test_set.indices == [5]
        assert sorted(dm.train_set.indices + dm.val_set.indices) == list(range(5))
        parts.append(dm.val_set.indices)
    assert sorted(i for part in parts for i in part) == list(range(5))
    assert sorted(map(len, parts)) == [1, 2, 2]


@pytest.mark.parametrize("train_split", ["train", "trainval"])
def test_voc_folds_divide_train_split_less_val_split_which_stays_the_test(tmp_path: Path, train_split: str) -> None:
    root = make_fake_voc(tmp_path / "voc")
    seen = []
    for k in range(3):
        dm = VOCDataModule(root=str(root), train_split=train_split, num_workers=0, folds=3, fold=k)
        dm.setup("fit")
        (val,) = [Path(p).stem for p in dm.val_set.images]
        assert val not in {Path(p).stem for p in dm.train_set.images}
        assert [Path(p).stem for p in dm.test_set.images] == FAKE_VOC_SPLITS["val"]
        seen.append(val)
    assert sorted(seen) == FAKE_VOC_SPLITS["train"]


def test_patches_take_the_folds_of_their_base(user_root: Path) -> None:
    base = FolderDataModule(root=str(user_root), num_classes=4, num_workers=0, folds=3, fold=2)
    dm = PatchDataModule(base, window=15, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.val_set is base.val_set
    assert names(dm.val_set, user_root) == names(folder(user_root, folds=3, fold=2).val_set, user_root)
    assert len(dm.train_set) == len(base.train_set)


@pytest.mark.parametrize(("options", "message"), [
    ({"folds": 3, "fold": 3}, "data.fold=3: use a fold in 0..2 (data.folds=3)"),
    ({"folds": 3, "fold": -1}, "data.fold=-1: use a fold in 0..2"),
    ({"folds": 1}, "data.folds=1: use 2 or more folds"),
    ({"fold": 2}, "data.fold=2 without data.folds: set data.folds"),
])
def test_a_fold_setting_that_names_no_fold_is_refused(user_root: Path, options: dict, message: str) -> None:
    with pytest.raises(SegkitError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        FolderDataModule(root=str(user_root), num_classes=4, **options)


def test_more_folds_than_pool_images_is_refused_naming_the_pool(user_root: Path) -> None:
    with pytest.raises(SegkitError, match=r"data\.folds=11: train/ \+ val/ of .* holds 10 image\(s\), fewer than the "
                                          r"folds; use data\.folds=10 or fewer"):
        folder(user_root, folds=11)


def test_segkit_train_shows_a_fold_error_in_one_line(user_root: Path, tmp_path: Path) -> None:
    result = run_in_process(segkit.cli.train.main, ["data=folder", f"data.root={user_root}", "data.num_classes=4",
                                                    "data.fold=1", *CPU], tmp_path)
    assert_one_line_error(result, "data.fold=1 without data.folds")


def fold_record(fold: int, seed: int, score: float) -> dict:
    return {"command": "train", "overrides": ["data=folder", "data.folds=3", f"data.fold={fold}", f"seed={seed}",
                                              "model.base_width=8"],
            "val": {"mIoU_best": score}, "test": {"mIoU": score}}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_report_averages_runs_differing_in_fold_and_seed_as_one_configuration(tmp_path: Path) -> None:
    scores = {(f, s): 0.5 + 0.1 * f + 0.01 * s for f in range(3) for s in (1, 2)}
    for job, ((fold, seed), score) in enumerate(scores.items()):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps(fold_record(fold, seed, score)))
    assert report_main([str(tmp_path), "--no-figures"]) == 0
    (row,) = read_rows(tmp_path / "report_by_config.csv")
    assert "data.fold" not in row and row["n"] == "6"
    assert float(row["test/mIoU_mean"]) == pytest.approx(np.mean(list(scores.values())))
    from segkit.report.runs import find_runs, group_configs, swept_keys

    runs, _ = find_runs([tmp_path])
    (config,) = group_configs(runs, swept_keys(runs))
    assert config.label == "all runs (3 folds × 2 seeds)"


def test_a_fold_sweep_of_segkit_train_is_one_configuration_in_segkit_report(user_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(TRAIN_CMD, ["-m", "data=folder", f"data.root={user_root}", "data.num_classes=4", "data.folds=3",
                               "data.fold=0,1,2", "data.batch_size=2", "data.num_workers=0", "model.base_width=4",
                               "model.depth=2", "trainer.max_steps=2", "logger=csv", f"hydra.sweep.dir={sweep}",
                               *QUIET_CALLBACKS, *CPU], tmp_path / "work")
    assert proc.returncode == 0, describe(proc)
    for job in range(3):
        record = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert f"data.fold={job}" in record["overrides"]
    assert report_main([str(sweep), "--no-figures"]) == 0
    (row,) = read_rows(sweep / "report_by_config.csv")
    assert row["n"] == "3" and "data.fold" not in row
    assert [r["data.fold"] for r in read_rows(sweep / "report.csv")] == ["0", "1", "2"]
