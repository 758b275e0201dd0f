"""Users' own data as it really comes: 16-bit and float TIFFs, any channel count, instance,
binary and colour masks, the 0/255 trap, and the full preflight (data=folder)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import ndimage
from user_data import (
    SIZES,
    binary_masks,
    touching_instances,
    write_masks_folder,
    write_nuclei_folder,
)

from segkit.data import FolderDataModule
from segkit.data.files import preflight as preflight_module
from segkit.data.modules.folder import auto_crop_size
from segkit.errors import SegkitError
from segkit.scoring.losses import unet_weight_map


def folder(root: Path, **options: object) -> FolderDataModule:
    settings: dict = {"num_classes": 2, "crop_size": 32, "batch_size": 2, "num_workers": 0, **options}
    return FolderDataModule(root=str(root), **settings)


def one_line_error(dm: FolderDataModule, stage: str = "fit") -> str:
    with pytest.raises(SegkitError) as caught:
        dm.setup(stage)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# --- images -------------------------------------------------------------------------------

def test_16_bit_tiffs_are_scaled_by_their_own_percentiles_not_clipped(tmp_path: Path) -> None:
    root = write_nuclei_folder(tmp_path)
    dm = folder(root, in_channels=1, mask_type="instances", mean=[0.0], std=[1.0])
    dm.setup("fit")
    raw = tifffile.imread(root / "val" / "images" / "cell0.tif").astype(np.float64)
    low, high = np.percentile(raw, [1, 99.8])
    image, mask = dm.val_set[0]
    assert image.shape == (1, *SIZES["val"][0])
    torch.testing.assert_close(image[0], torch.from_numpy((raw - low) / (high - low)).float())
    # Objects (~16,000) and background (~800) stay apart: a clip to 255 would make both 1.0.
    assert image[0][mask == 1].mean() > 0.8 and image[0][mask == 0].mean() < 0.2


def test_a_fixed_range_maps_float_tiffs_the_same_for_every_image(tmp_path: Path) -> None:
    root = write_masks_folder(tmp_path, binary_masks(1))
    for path in (root / "train" / "images").glob("*.png"):
        path.unlink()
    for n, (height, width) in enumerate(SIZES["train"]):
        tifffile.imwrite(root / "train" / "images" / f"s{n}.tif", np.full((height, width), 2000.0, np.float32))
    dm = folder(root, in_channels=1, intensity="range", value_range=[0, 4000], mean=[0.0], std=[1.0])
    dm.setup("fit")
    image, _ = dm.make_split("val", dm.train_set.pairs)[0]
    assert torch.allclose(image, torch.full_like(image, 0.5))


@pytest.mark.parametrize("layout", ["CHW", "pages"])
def test_four_channel_tiffs_give_four_input_channels(tmp_path: Path, layout: str) -> None:
    root = write_nuclei_folder(tmp_path, channels_first=4)
    if layout == "pages":  # a multi-page TIFF: one page a channel
        for path in root.glob("*/images/*.tif"):
            pages = tifffile.imread(path)
            path.unlink()
            for page in pages:
                tifffile.imwrite(path, page, append=True, metadata=None)
    dm = folder(root, in_channels=4, mask_type="instances")
    dm.setup("fit")
    images, _, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 4, 32, 32) and dm.mean == [0.5] * 4
    message = one_line_error(folder(root, in_channels=3, mask_type="instances"))
    assert re.search(r"cell0.tif: image has 4 channels but data.in_channels=3; set data.in_channels=4", message)


def test_16_bit_png_and_rgba_png_are_read(tmp_path: Path) -> None:
    root = write_masks_folder(tmp_path, binary_masks(1))
    first = root / "train" / "images" / "s0.png"
    height, width = SIZES["train"][0]
    Image.fromarray(np.full((height, width), 40000, np.uint16)).save(first)
    Image.new("RGBA", (SIZES["train"][1][1], SIZES["train"][1][0]), (10, 20, 30, 128)).save(root / "train" / "images" / "s1.png")
    dm = folder(root, intensity="range", value_range=[0, 65535], mean=[0.0] * 3, std=[1.0] * 3)
    dm.setup("fit")
    grey, _ = dm.make_split("val", dm.train_set.pairs)[0]
    assert grey.shape == (3, height, width) and torch.allclose(grey, torch.full_like(grey, 40000 / 65535))
    rgba, _ = dm.make_split("val", dm.train_set.pairs)[1]
    assert rgba.shape[0] == 3  # alpha dropped


# --- masks --------------------------------------------------------------------------------

def test_instance_masks_keep_touching_objects_apart(tmp_path: Path) -> None:
    root = write_nuclei_folder(tmp_path)
    dm = folder(root, in_channels=1, mask_type="instances", crop_size=64)
    dm.setup("fit")
    ids = tifffile.imread(root / "train" / "masks" / "cell0.tif").astype(np.int64)
    _, mask = dm.make_split("val", dm.train_set.pairs)[0]
    touching = (ids == 1) & (np.roll(ids, -1, axis=1) == 2)
    assert touching.any(), "the fake data must have touching objects"
    assert (mask.numpy()[touching] == 0).all(), "the border between two objects is background"
    assert set(mask.unique().tolist()) == {0, 1}
    # Pixel by pixel: an object pixel is background exactly when another object is among its 8
    # neighbours; object pixels beside the background stay object.
    padded = np.pad(ids, 1)
    expected = np.zeros_like(ids)
    for y, x in zip(*np.nonzero(ids)):
        neighbours = set(padded[y:y + 3, x:x + 3].ravel().tolist()) - {0}
        expected[y, x] = neighbours == {ids[y, x]}
    assert np.array_equal(mask.numpy(), expected)
    # Training batches carry the instance ids for the weight map, 0 on crop padding.
    _, mask, instances = dm.train_set[0]
    assert instances.shape == mask.shape and instances.max() >= 2
    assert (instances[mask == 255] == 0).all() and (mask == 255).any()  # 37 x 53 padded to 64


def test_the_weight_map_sees_touching_instances_that_connected_components_merge() -> None:
    ids = touching_instances(40, 60, seed=0).astype(np.int64)
    mask = (ids > 0).astype(np.int64)  # the two discs touch: one connected component
    near_both = (mask == 0) & (ndimage.distance_transform_edt(ids != 1) <= 3) & (ndimage.distance_transform_edt(ids != 2) <= 3)
    assert near_both.any()
    with_ids = unet_weight_map(mask, object_class=1, instances=ids)
    without = unet_weight_map(mask, object_class=1)
    # Beside the contact, d1 + d2 <= 6 px: w0 * exp(-36 / 50) ~ 4.9 or more on top of w_c.
    assert with_ids[near_both].min() > without[near_both].max() + 4


def test_binary_masks_map_any_nonzero_value_to_the_object_class(tmp_path: Path) -> None:
    root = write_masks_folder(tmp_path, binary_masks(255))
    dm = folder(root, mask_type="binary")
    dm.setup("fit")
    _, mask = dm.val_set[0]
    assert set(mask.unique().tolist()) == {0, 1}


@pytest.mark.parametrize("validate", ["full", "header", "lazy"])
def test_0_255_masks_read_as_indices_stop_before_training(tmp_path: Path, validate: str) -> None:
    root = write_masks_folder(tmp_path, binary_masks(255))
    message = one_line_error(folder(root, validate=validate))
    assert re.search(r"/train/masks/s0.png: masks hold only 0 and 255.*set data.mask_type=binary", message)


def test_colour_masks_map_through_the_palette_of_classes_txt(tmp_path: Path) -> None:
    colours = {0: (0, 0, 0), 1: (128, 64, 128), 2: (250, 170, 30)}
    masks: dict[str, list[np.ndarray]] = {}
    for split, sizes in SIZES.items():
        masks[split] = []
        for n, (height, width) in enumerate(sizes):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[: height // 2] = colours[1 + n % 2]
            masks[split].append(rgb)
    root = write_masks_folder(tmp_path, masks)
    (root / "classes.txt").write_text("background 0 0 0\nroad #804080\nsign 250 170 30\n")
    dm = folder(root, num_classes=3, mask_type="colors")
    dm.setup("fit")
    assert dm.class_names == ["background", "road", "sign"]
    _, mask = dm.val_set[1]
    height = SIZES["val"][1][0]
    assert (mask[: height // 2] == 2).all() and (mask[height // 2:] == 0).all()
    stray = masks["val"][0].copy()
    stray[3, 5] = (1, 2, 3)
    Image.fromarray(stray).save(root / "val" / "masks" / "s0.png")
    message = one_line_error(folder(root, num_classes=3, mask_type="colors"))
    assert re.search(r"val/masks/s0.png: colour \(1, 2, 3\) \(#010203\) at x=5, y=3 is not in the palette", message)


# --- the preflight ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        ("truncate_tiff", r"train/images/cell1.tif: unreadable, truncated"),
        ("value", r"train/masks/s1.png: mask value 7 is not a class \(0..1\)"),
        ("size", r"val/images/s0.png is 31x45 .* but its mask .*val/masks/s0.png is 10x12"),
    ],
)
def test_every_bad_file_stops_setup_before_training_with_one_line(tmp_path: Path, damage: str, pattern: str) -> None:
    if damage == "truncate_tiff":
        root = write_nuclei_folder(tmp_path)
        path = root / "train" / "images" / "cell1.tif"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        dm = folder(root, in_channels=1, mask_type="instances")
    else:
        masks = binary_masks(1)
        if damage == "value":
            masks["train"][1][0, 0] = 7
        root = write_masks_folder(tmp_path, masks)
        if damage == "size":
            Image.fromarray(np.zeros((12, 10), np.uint8)).save(root / "val" / "masks" / "s0.png")
        dm = folder(root)
    assert re.search(pattern, one_line_error(dm))


def test_a_second_setup_reads_the_cache_and_a_changed_file_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = write_masks_folder(tmp_path, binary_masks(1))
    decoded: list[Path] = []
    original = preflight_module.pair_facts
    monkeypatch.setattr(preflight_module, "pair_facts", lambda pair, *a: decoded.append(pair[0]) or original(pair, *a))
    folder(root).setup("fit")
    assert len(decoded) == 5
    decoded.clear()
    folder(root).setup("fit")
    assert decoded == []
    changed = binary_masks(1)["train"][2]
    changed[0, 0] = 9  # now a bad value: the cache must not hide it
    Image.fromarray(changed).save(root / "train" / "masks" / "s2.png")
    assert "s2.png: mask value 9" in one_line_error(folder(root))
    assert decoded == [root / "train" / "images" / "s2.png"]


def test_the_default_crop_suits_the_images() -> None:
    assert auto_crop_size([(90, 120), (150, 169), (100, 210), (220, 96), (130, 140)]) == 96
    assert auto_crop_size([(512, 512)] * 3) == 96  # large images: capped (short steps on a CPU)
    assert auto_crop_size([(20, 30)]) == 32
