"""Bad input data as careless users bring it: each case ends in one error line naming the file
(or config key and value) and the fix, before any long work and with nothing written.

Data sets are tiny folder trees shaped like users' data (odd sizes, 1/3/4 channels, 8- and
16-bit, float32 TIFFs), damaged one way each. segkit-train, segkit-data and segkit-predict run
in-process (tests/helpers.py's ``run_in_process``).
"""

from __future__ import annotations

import json
import shlex
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import CPU, QUIET_CALLBACKS, TINY_MODEL, CommandResult, assert_one_line_error, run_in_process, tree_state
from PIL import Image
from user_data import SIZES, binary_masks, write_masks_folder

import segkit.cli.data
import segkit.cli.train
from segkit.data.files.readers import match_channels, read_array
from segkit.errors import SegkitError
from segkit.training.callbacks import SegmentationImageLogger

HEIGHT, WIDTH = SIZES["train"][1]  # train/images/s1: 48 x 41, odd
NEWLINE_STEM = "scan\nday2"
FOLDER = ["data=folder", "data.num_classes=2", "data.num_workers=0", "data.batch_size=2"]


# --- files as users write them --------------------------------------------------------------

Shape = tuple[int, int]
Writer = Callable[[Path, Shape], None]


def bomb_png(path: Path, shape: Shape = (4, 4)) -> None:
    """A tiny valid PNG whose header claims 100000 x 100000 (IHDR patched, its CRC fixed)."""
    Image.new("L", (4, 4)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC of "IHDR" and its 13 bytes
    path.write_bytes(bytes(data))


def float_image(shape: Shape, channels: int, bad: float, count: int = 3) -> np.ndarray:
    """float32 ``(H, W, C)`` in [0, 1] with ``count`` pixels of ``bad`` (NaN, inf)."""
    image = np.random.default_rng(0).random((*shape, channels), dtype=np.float32)
    image.reshape(-1, channels)[:count, 0] = bad
    return image


def float_tiff(channels: int, bad: float, count: int = 3) -> Writer:
    def write(path: Path, shape: Shape) -> None:
        image = float_image(shape, channels, bad, count)
        tifffile.imwrite(path, image[..., 0] if channels == 1 else image)
    return write


def rgb_nir(path: Path, shape: Shape) -> None:
    """8-bit RGB + near-infrared: 4 samples, the 4th an unspecified extra sample (not alpha)."""
    pixels = np.random.default_rng(1).integers(0, 256, (*shape, 4), dtype=np.uint8)
    tifffile.imwrite(path, pixels, photometric="rgb", extrasamples=[0])


def rgb_alpha(path: Path, shape: Shape) -> None:
    """8-bit RGB + associated alpha (TIFF ExtraSamples=1)."""
    tifffile.imwrite(path, np.zeros((*shape, 4), np.uint8), photometric="rgb", extrasamples=[1])


def four_planes(dtype: type = np.uint8) -> Writer:
    """Four grey planes ``(C, H, W)``, as multispectral cameras write them."""
    def write(path: Path, shape: Shape) -> None:
        pixels = np.random.default_rng(2).integers(0, 200, (4, *shape)).astype(dtype)
        tifffile.imwrite(path, pixels, photometric="minisblack")
    return write


def float_mask(value: float) -> Writer:
    """A binary mask as float32 with ``value`` in a 2 x 5 corner (10 pixels)."""
    def write(path: Path, shape: Shape) -> None:
        mask = np.zeros(shape, np.float32)
        mask[shape[0] // 2:] = 1
        mask[:2, :5] = value
        tifffile.imwrite(path, mask)
    return write


def symlink_loop(path: Path, shape: Shape) -> None:
    path.symlink_to(path.name)


def broken_link(path: Path, shape: Shape) -> None:
    path.symlink_to("moved_away.png")


def replace_image(root: Path, stem: str, write: Writer, suffix: str = ".tif", split: str = "train",
                  sub: str = "images") -> Path:
    """Swap ``split/sub/<stem>.*`` (``s<n>``, of ``SIZES[split][n]``) for ``write``'s ``<stem><suffix>``."""
    for old in (root / split / sub).glob(f"{stem}.*"):
        old.unlink()
    path = root / split / sub / f"{stem}{suffix}"
    write(path, SIZES[split][int(stem[1:])])
    return path


def replace_all_images(root: Path, write: Writer) -> None:
    for split, sizes in SIZES.items():
        for n in range(len(sizes)):
            replace_image(root, f"s{n}", write, split=split)


def newline_named_nan(root: Path) -> None:
    """An image and mask named with a newline; the image holds NaN."""
    for sub in ("images", "masks"):
        (root / "train" / sub / "s1.png").unlink()
    tifffile.imwrite(root / "train" / "images" / f"{NEWLINE_STEM}.tif", float_image((HEIGHT, WIDTH), 3, np.nan))
    Image.fromarray(binary_masks(1)["train"][1]).save(root / "train" / "masks" / f"{NEWLINE_STEM}.png")


def newline_named_unpaired(root: Path) -> None:
    Image.new("RGB", (WIDTH, HEIGHT)).save(root / "train" / "images" / f"{NEWLINE_STEM}.png")


# --- segkit-train ---------------------------------------------------------------------------

def train(root: Path, data: Path | None, *overrides: str) -> CommandResult:
    """``segkit-train`` of one step on ``data`` (``None``: the built-in shapes), run dir ``root/run``."""
    source = [*FOLDER, f"data.root={data}"] if data is not None else ["data.num_workers=0"]
    argv = [*source, *TINY_MODEL, *QUIET_CALLBACKS, *CPU, "trainer.max_steps=1", "test=false",
            f"hydra.run.dir={root / 'run'}", *overrides]
    return run_in_process(segkit.cli.train.main, argv, root)


def assert_refused_before_training(root: Path, data: Path | None, overrides: list[str], names: list[str],
                                   absent: list[str]) -> str:
    """Training stops with one line naming ``names`` (not ``absent``); data and run untouched."""
    before = tree_state(data) if data is not None else {}
    result = train(root, data, *overrides)
    assert_one_line_error(result, *names)
    line = result.error_lines[0]
    assert line.startswith("segkit-train: error: ")
    for text in absent:
        assert text not in line, line
    assert (tree_state(data) if data is not None else {}) == before
    assert not (root / "run" / "checkpoints").exists() and not (root / "run" / "metrics.json").exists()
    return line


@dataclass(frozen=True)
class Case:
    """One damaged data set: ``damage(data root)``, extra overrides, what the line must (not) say."""

    damage: Callable[[Path], object]
    overrides: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()


TRAIN_CASES = {
    # D1: NaN / inf in float32 TIFFs (loss nan, exit 0 before).
    "float32_rgb_with_nan": Case(
        lambda r: replace_image(r, "s1", float_tiff(3, np.nan)),
        names=("train/images/s1.tif", "3 of 1,968 pixels are NaN or infinite", "replace them in the file")),
    "float32_grey_with_inf": Case(lambda r: replace_image(r, "s0", float_tiff(1, np.inf, 1)), ("data.in_channels=1",),
                                  ("train/images/s0.tif", "1 of 1,961 pixels are NaN or infinite")),
    # D2: an 8-bit 4th channel that is not alpha is data, never silently dropped.
    "rgb_nir_8bit_tiff": Case(lambda r: replace_image(r, "s1", rgb_nir),
                              names=("train/images/s1.tif", "4 channels", "not marked as alpha", "data.in_channels=4")),
    "four_planes_8bit_tiff": Case(lambda r: replace_image(r, "s1", four_planes()),
                                  names=("train/images/s1.tif", "data.in_channels=4")),
    # E1: a PNG header claiming 100000 x 100000 (Pillow's DecompressionBombError), image or mask.
    "bomb_png_image": Case(lambda r: replace_image(r, "s1", bomb_png, ".png"),
                           names=("train/images/s1.png", "100000x100000", "decompression bombs")),
    "bomb_png_mask": Case(lambda r: replace_image(r, "s2", bomb_png, ".png", sub="masks"),
                          names=("train/masks/s2.png", "100000x100000")),
    # F1: float masks holding +inf or NaN are named so.
    "mask_with_inf": Case(lambda r: replace_image(r, "s1", float_mask(np.inf), sub="masks"),
                          names=("train/masks/s1.tif", "mask holds inf at 10 pixel(s)"),
                          absent=("-9223372036854775808",)),
    "mask_with_nan": Case(lambda r: replace_image(r, "s1", float_mask(np.nan), sub="masks"),
                          names=("train/masks/s1.tif", "mask holds NaN at 10 pixel(s)"), absent=("fractional",)),
    # F2: a newline in a file name is escaped, the message stays one line.
    "newline_in_a_name_nan": Case(newline_named_nan, names=("scan\\nday2.tif'", "NaN or infinite")),
    "newline_in_a_name_unpaired": Case(newline_named_unpaired,
                                       names=("scan\\nday2.png'", "no mask for 'scan\\nday2'")),
    # F3: links that lead nowhere are named, not reported as a missing image or mask.
    "symlink_loop": Case(lambda r: replace_image(r, "s1", symlink_loop, ".png"),
                         names=("train/images/s1.png: a symlink loop",), absent=("no image",)),
    "broken_symlink": Case(lambda r: replace_image(r, "s0", broken_link, ".png", split="val", sub="masks"),
                           names=("val/masks/s0.png: a broken symlink to moved_away.png",), absent=("no mask",)),
    # E2: config values refused when the data module is built.
    "crop_size_0": Case(lambda r: None, ("data.crop_size=0",), ("data.crop_size=0", "1 or more", "auto")),
    "crop_size_negative": Case(lambda r: None, ("data.crop_size=-5",), ("data.crop_size=-5", "1 or more")),
    "batch_size_0": Case(lambda r: None, ("data.batch_size=0",), ("data.batch_size=0", "1 or more")),
    "std_zeros": Case(lambda r: None, ("data.std=[0,0,0]",), ("data.std=[0, 0, 0]", "> 0")),
    "num_classes_abc": Case(lambda r: None, ("data.num_classes=abc",), ("data.num_classes='abc'", "2 or more")),
}


@pytest.mark.parametrize("case", TRAIN_CASES.values(), ids=TRAIN_CASES.keys())
def test_segkit_train_refuses_bad_data_in_one_line_before_step_1(tmp_path: Path, case: Case) -> None:
    data = write_masks_folder(tmp_path / "data", binary_masks(1))
    case.damage(data)
    assert_refused_before_training(tmp_path, data, list(case.overrides), list(case.names), list(case.absent))


def test_batch_size_0_is_refused_for_the_built_in_data_too(tmp_path: Path) -> None:
    assert_refused_before_training(tmp_path, None, ["data.batch_size=0"], ["data.batch_size=0", "1 or more"], [])


def test_an_rgba_png_and_an_rgb_alpha_tiff_still_drop_their_alpha(tmp_path: Path) -> None:
    """The guard of D2: a real alpha channel (PNG RGBA, TIFF ExtraSamples alpha) is dropped."""
    data = write_masks_folder(tmp_path / "data", binary_masks(1))
    replace_image(data, "s0", lambda path, shape: Image.new("RGBA", shape[::-1]).save(path), ".png")
    replace_image(data, "s1", rgb_alpha)
    result = train(tmp_path, data)
    assert result.code == 0, result.stderr[-2000:]


def test_the_error_names_the_segkit_data_command_that_lists_every_bad_file(tmp_path: Path) -> None:
    """F4: 4-channel 16-bit TIFFs fail training (data.in_channels=3); the command it names lists them all."""
    data = write_masks_folder(tmp_path / "data", binary_masks(1))
    replace_all_images(data, four_planes(np.uint16))
    line = assert_refused_before_training(tmp_path, data, ["data.mask_type=binary"], ["and 2 more bad pair(s)"], [])
    command = line.split("`")[1]
    assert command == f"segkit-data {data} --in-channels 3 --num-classes 2 --mask-type binary"
    audit = audit_of(tmp_path, *shlex.split(command)[1:])
    assert audit.code == 1
    assert len([text for text in audit.stderr.splitlines() if "set data.in_channels=4" in text]) == 5


# --- segkit-data ----------------------------------------------------------------------------

def audit_of(tmp_path: Path, *argv: str) -> CommandResult:
    """``segkit-data argv`` in-process, its report at ``tmp_path/audit.json``."""
    out = tmp_path / "audit.json"
    out.unlink(missing_ok=True)
    return run_in_process(lambda: sys.exit(segkit.cli.data.main([*argv, "--out", str(out), "--no-progress"])), [])


def report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "audit.json").read_text())


AUDIT_BAD_FILES = {
    "float32_with_nan": (lambda r: replace_image(r, "s1", float_tiff(3, np.nan)),
                         "train/images/s1.tif: 3 of 1,968 pixels are NaN or infinite"),
    "bomb_png": (lambda r: replace_image(r, "s0", bomb_png, ".png", split="val"),
                 "val/images/s0.png: its header claims 100000x100000"),
    "newline_in_a_name": (newline_named_nan, "scan\\nday2.tif'"),
}


@pytest.mark.parametrize(("damage", "expected"), AUDIT_BAD_FILES.values(), ids=AUDIT_BAD_FILES.keys())
def test_segkit_data_lists_the_bad_file_on_one_line(tmp_path: Path, damage: Callable, expected: str) -> None:
    data = write_masks_folder(tmp_path / "data", binary_masks(1))
    damage(data)
    result = audit_of(tmp_path, str(data))
    assert result.code == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("segkit-data: bad file: ") and expected in line, line


@pytest.mark.parametrize(("write", "channels"), [(rgb_nir, 4), (four_planes(), 4), (rgb_alpha, 3)],
                         ids=["rgb_nir_8bit", "four_planes_8bit", "rgb_associated_alpha_8bit"])
def test_segkit_data_suggests_in_channels_4_unless_the_4th_is_alpha(tmp_path: Path, write: Writer,
                                                                    channels: int) -> None:
    data = write_masks_folder(tmp_path / "data", binary_masks(1))
    replace_all_images(data, write)
    result = audit_of(tmp_path, str(data))
    assert result.code == 0, result.stderr
    suggested = report(tmp_path)["suggestions"]
    assert suggested["data.in_channels"]["value"] == channels
    assert (f"data.in_channels={channels}" in suggested["command"]) == (channels != 3)


def test_segkit_data_names_a_symlink_loop_as_the_root(tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to("data")
    result = audit_of(tmp_path, str(tmp_path / "data"))
    assert_one_line_error(result, str(tmp_path / "data"), "symlink loop")
    assert not (tmp_path / "audit.json").exists()


# --- segkit-predict's reader and the TensorBoard grid ---------------------------------------

@pytest.mark.parametrize(
    ("write", "suffix", "names"),
    [(float_tiff(1, np.nan, 5), ".tif", ("5 of 1,968", "NaN or infinite")),
     (float_tiff(3, -np.inf), ".tif", ("3 of 1,968",)),
     (bomb_png, ".png", ("100000x100000 (width x height)", "10,000,000,000 pixels"))],
    ids=["grey_nan", "rgb_minus_inf", "bomb_png"],
)
def test_the_reader_predict_uses_refuses_the_file(tmp_path: Path, write: Writer, suffix: str,
                                                  names: tuple[str, ...]) -> None:
    path = tmp_path / f"new image{suffix}"
    write(path, (HEIGHT, WIDTH))
    with pytest.raises(SegkitError) as caught:
        match_channels(read_array(path), 1, path)  # what segkit.cli.predict.read_image does
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for name in names:
        assert name in message, message


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of a one-step training on clean 3-channel data."""
    root = tmp_path_factory.mktemp("clean_run")
    result = train(root, write_masks_folder(root / "data", binary_masks(1)))
    assert result.code == 0, result.stderr[-2000:]
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(("write", "suffix", "names"), [
    (float_tiff(3, np.nan), ".tif", ("scan.tif", "3 of 1,968 pixels are NaN or infinite")),
    (bomb_png, ".png", ("scan.png", "100000x100000")),
], ids=["float32_with_nan", "bomb_png"])
def test_segkit_predict_refuses_the_image_and_writes_nothing(
    tmp_path: Path, checkpoint: Path, write: Writer, suffix: str, names: tuple[str, ...],
) -> None:
    import segkit.cli.predict

    image = tmp_path / "in" / f"scan{suffix}"
    image.parent.mkdir()
    write(image, (HEIGHT, WIDTH))
    argv = [f"ckpt_path={checkpoint}", f"input={image}", f"output={tmp_path / 'out'}", "progress_bar=false",
            "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_in_process(segkit.cli.predict.main, argv, tmp_path)
    assert_one_line_error(result, *names)
    assert tree_state(tmp_path / "out") == {}


def test_a_1_by_100000_image_gives_grid_tiles_of_at_most_512_px() -> None:
    logger = SegmentationImageLogger(overlay=True)
    strip = logger.row(torch.rand(3, 1, 100_000), torch.zeros(1, 100_000, dtype=torch.long),
                       torch.ones(1, 100_000, dtype=torch.long))
    background = torch.zeros(45, 31, dtype=torch.long)
    small = logger.row(torch.rand(3, 45, 31), background, background)
    assert all(max(tile.shape[-2:]) <= 512 for tile in strip) and strip[0].shape[-2:] == (1, 512)
    assert small[0].shape[-2:] == (270, 186)  # enlarged as before
    grid = logger.grid([strip, small])
    assert grid.shape[-1] <= 4 * (512 + 2) + 2 and grid.shape[-2] <= 2 * (512 + 2) + 2
