"""The folder data module (users' own data) on tiny fake trees, and its one-line input errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.data import FolderDataModule
from segkit.data.modules.folder import GREY_MEAN
from segkit.errors import SegkitError
from segkit.palette import voc_palette

# (name, (height, width), image file, mask mode): every image a different size, each smaller
# than 50 on some side; .png and .jpg images are RGB, .tif grayscale; "P" = VOC-palette PNG.
FAKE_SAMPLES = {
    "train": [("a", (40, 56), ".png", "L"), ("b", (48, 36), ".jpg", "P"), ("c", (33, 45), ".tif", "L")],
    "val": [("d", (52, 44), ".tif", "P"), ("e", (37, 61), ".jpg", "L")],
}
NUM_CLASSES = 3


def fake_label(n: int) -> int:
    return 1 + n % (NUM_CLASSES - 1)


def fake_mask(height: int, width: int, label: int) -> np.ndarray:
    """Background 0, a ``label`` rectangle and a 255 (ignore) band around it."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 - 1 : 3 * height // 4 + 1, width // 4 - 1 : 3 * width // 4 + 1] = 255
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = label
    return mask


def make_fake_folder(
    root: Path, splits: tuple[str, ...] = ("train", "val"), classes: list[str] | None = None
) -> Path:
    """Write ``root/<split>/{images,masks}`` of ``FAKE_SAMPLES`` (a ``test`` split copies val).

    Sample n (counting train then val) has label ``fake_label(n)``; ``classes`` are written to
    ``root/classes.txt``. Returns ``root``.
    """
    rng = np.random.default_rng(0)
    for split in splits:
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        first = len(FAKE_SAMPLES["train"]) if split != "train" else 0
        samples = FAKE_SAMPLES["val" if split == "test" else split]
        for n, (name, (height, width), suffix, mask_mode) in enumerate(samples, first):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels[..., 0] if suffix == ".tif" else pixels)
            image.save(root / split / "images" / f"{name}{suffix}")
            mask = Image.fromarray(fake_mask(height, width, fake_label(n)), mode=mask_mode)
            if mask_mode == "P":
                mask.putpalette(voc_palette(256).flatten().tolist())
            mask.save(root / split / "masks" / f"{name}.png")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def datamodule(root: Path, **kwargs: object) -> FolderDataModule:
    options: dict = {"num_classes": NUM_CLASSES, "crop_size": 50, "batch_size": 3, "num_workers": 0, **kwargs}
    return FolderDataModule(root=str(root), **options)


def test_training_batches_crops_of_mixed_sizes_padded_with_the_ignore_index(tmp_path: Path) -> None:
    dm = datamodule(make_fake_folder(tmp_path))
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (3, 3, 50, 50) and images.dtype == torch.float32
    assert masks.shape == (3, 50, 50) and masks.dtype == torch.int64
    assert all((m == 255).any() for m in masks)  # each image is smaller than 50 on a side


def test_val_batches_are_whole_images_one_at_a_time_and_test_reuses_val(tmp_path: Path) -> None:
    dm = datamodule(make_fake_folder(tmp_path))
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert len(batches) == 2
    for n, ((image, mask), (_, (height, width), _, _)) in enumerate(zip(batches, FAKE_SAMPLES["val"]), start=3):
        assert image.shape == (1, 3, height, width) and mask.shape == (1, height, width)
        # A palette (d) and an L (e) PNG mask: both give indices, not colours.
        assert set(mask.unique().tolist()) == {0, fake_label(n), 255}
    dm.setup("test")
    assert dm.test_set is dm.val_set


def test_palette_masks_are_read_as_indices(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    with Image.open(root / "train" / "masks" / "b.png") as written:
        assert written.mode == "P"
    dm = datamodule(root)
    dm.setup("validate")
    _, mask = dm.make_split("val", [(root / "train" / "images" / "b.jpg", root / "train" / "masks" / "b.png")])[0]
    assert torch.equal(mask, torch.from_numpy(fake_mask(48, 36, fake_label(1))).long())


def test_a_test_split_is_used_when_present(tmp_path: Path) -> None:
    dm = datamodule(make_fake_folder(tmp_path, splits=("train", "val", "test")))
    dm.setup("test")
    assert dm.test_set is not dm.val_set and len(dm.test_set) == 2
    assert dm.test_set.pairs[0][0].parent == tmp_path.absolute() / "test" / "images"


def test_class_names_come_from_the_config_then_classes_txt_then_defaults(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path, classes=["sky", "road", "car"])
    assert datamodule(root).class_names == ["sky", "road", "car"]
    assert datamodule(root, class_names=["x", "y", "z"]).class_names == ["x", "y", "z"]
    assert datamodule(tmp_path / "nowhere").class_names == ["class_0", "class_1", "class_2"]


def test_grayscale_with_one_channel_and_grey_files_replicated_for_three(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    grey = datamodule(root, in_channels=1)
    grey.setup("fit")
    assert grey.mean == list(GREY_MEAN)
    images, _ = next(iter(grey.train_dataloader()))
    assert images.shape == (3, 1, 50, 50)
    image, _ = grey.train_set[0]  # an RGB PNG, converted to grey
    assert image.shape[0] == 1
    rgb = datamodule(root, mean=[0.0] * 3, std=[1.0] * 3)
    rgb.setup("fit")
    image, _ = rgb.val_set[0]  # val/d.tif, a grayscale TIFF
    assert image.shape[0] == 3 and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def error_of(dm: FolderDataModule, stage: str = "fit", load: bool = False) -> str:
    """The message of the SegkitError raised by ``setup`` (or by loading every sample)."""
    with pytest.raises(SegkitError) as caught:
        dm.setup(stage)
        if load:
            for split in (dm.train_set, dm.val_set):
                for index in range(len(split)):
                    split[index]
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def assert_says(message: str, *patterns: str) -> None:
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


def test_missing_root(tmp_path: Path) -> None:
    message = error_of(datamodule(tmp_path / "nowhere"))
    assert_says(message, re.escape(f"data.root={tmp_path}/nowhere: no such directory"), "point data.root at")


@pytest.mark.parametrize("missing", ["val", "train/masks"])
def test_missing_split_or_subfolder(tmp_path: Path, missing: str) -> None:
    shutil.rmtree(make_fake_folder(tmp_path) / missing)
    assert_says(error_of(datamodule(tmp_path)), re.escape(f"{tmp_path / missing}: no such directory"),
                "create it with images/ and masks/" if missing == "val" else "put the train masks there")


def test_image_without_mask_and_mask_without_image(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    (root / "train" / "masks" / "a.png").unlink()
    assert_says(error_of(datamodule(root)), re.escape(f"{root}/train/images/a.png: no mask for 'a'"),
                re.escape(f"expected {root}/train/masks/a.png"), "add the mask or remove the image")
    (root / "train" / "images" / "a.png").unlink()
    (root / "val" / "images" / "e.jpg").unlink()
    assert_says(error_of(datamodule(root)), re.escape(f"{root}/val/masks/e.png: no image for 'e'"),
                re.escape(f"expected {root}/val/images/e.png"), "add the image or remove the mask")


def test_empty_split(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    for path in (root / "val").glob("*/*"):
        path.unlink()
    message = error_of(datamodule(root))
    assert_says(message, re.escape(f"{root}/val/images: split 'val' has no images"), "add image files")


def test_unknown_extensions_are_refused_and_hidden_files_skipped(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    (root / "train" / "images" / ".DS_Store").write_bytes(b"\0")
    datamodule(root).setup("fit")
    (root / "train" / "images" / "notes.txt").write_text("hi")
    message = error_of(datamodule(root))
    assert_says(message, re.escape(f"{root}/train/images/notes.txt: unsupported image file type"),
                re.escape(".png, .jpg, .jpeg, .tif, .tiff"))
    (root / "train" / "images" / "notes.txt").unlink()
    shutil.move(root / "val" / "masks" / "d.png", root / "val" / "masks" / "d.jpg")
    assert_says(error_of(datamodule(root)), re.escape(f"{root}/val/masks/d.jpg: unsupported mask file type"),
                "JPEG is lossy", re.escape("masks must be .png, .tif, .tiff"))


def test_two_images_of_one_name(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    shutil.copy(root / "train" / "images" / "a.png", root / "train" / "images" / "a.jpeg")
    message = error_of(datamodule(root))
    assert_says(message, re.escape(f"{root}/train/images/a.jpeg"), "two images named 'a'; keep one")


@pytest.mark.parametrize("validate", ["header", "lazy"])
def test_image_and_mask_sizes_differ(tmp_path: Path, validate: str) -> None:
    root = make_fake_folder(tmp_path)
    Image.fromarray(fake_mask(20, 30, 1)).save(root / "val" / "masks" / "d.png")
    dm = datamodule(root, validate=validate)
    if validate == "lazy":
        dm.setup("fit")  # sizes are not read at setup
    message = error_of(dm, load=validate == "lazy")
    sizes = f"{root}/val/images/d.tif is 44x52 (width x height) but its mask {root}/val/masks/d.png is 30x20"
    assert_says(message, re.escape(sizes), "resize the mask")


@pytest.mark.parametrize("validate", ["full", "lazy"])
def test_mask_value_beyond_the_classes(tmp_path: Path, validate: str) -> None:
    root = make_fake_folder(tmp_path)
    dm = datamodule(root, num_classes=2, validate=validate)
    if validate == "lazy":
        dm.setup("fit")  # values are only checked when a sample is loaded
    message = error_of(dm, load=validate == "lazy")
    assert_says(message, re.escape(f"{root}/train/masks/b.png: mask value 2 is not a class (0..1)"),
                re.escape("set data.num_classes=3"), "map the value to 255")


def test_a_text_file_named_png_fails_at_setup(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    (root / "val" / "masks" / "e.png").write_text("not an image")
    assert_says(error_of(datamodule(root, validate="header")), re.escape(f"{root}/val/masks/e.png: unreadable"),
                "re-export it")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_png_stops_setup_under_full_validation(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path)
    truncate(root / "train" / "images" / "a.png")
    message = error_of(datamodule(root))
    assert_says(message, f"^{re.escape(str(root / 'train' / 'images' / 'a.png'))}: unreadable, truncated", "re-export it")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_truncated_png_fails_when_loaded_in_one_line_from_workers_too(tmp_path: Path, num_workers: int) -> None:
    root = make_fake_folder(tmp_path)
    path = root / "train" / "images" / "a.png"
    truncate(path)
    dm = datamodule(root, num_workers=num_workers, validate="header")
    dm.setup("fit")  # the header is intact
    with pytest.raises(SegkitError) as caught:
        list(dm.train_dataloader())
    assert_says(str(caught.value), f"^{re.escape(str(path))}: unreadable, truncated", "re-export it")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"class_names": ["a", "b"]}, r"data.class_names=\['a', 'b'\]: 2 class names but data.num_classes=3"),
        ({"batch_size": 4, "crop_size": None}, "data.batch_size=4 with data.crop_size=null"),
        ({"in_channels": 1, "mean": [0.5] * 3}, "data.mean=.*3 values for data.in_channels=1"),
        ({"validate": "all"}, "data.validate='all': use 'full'"),
    ],
)
def test_config_errors(tmp_path: Path, options: dict, pattern: str) -> None:
    with pytest.raises(SegkitError, match=pattern):
        datamodule(tmp_path, **options)


def test_classes_txt_of_the_wrong_length(tmp_path: Path) -> None:
    root = make_fake_folder(tmp_path, classes=["sky", "road"])
    with pytest.raises(SegkitError, match=re.escape(f"{root}/classes.txt: 2 class names but data.num_classes=3")):
        datamodule(root)
