"""Microscopy files as they come off the instrument: tiled 16-bit TIFFs and OME-Zarr read window
by window, Z/T stacks as planes (never channels), and label outputs napari and Fiji open with the
input's axes and pixel size."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
import zarr

from helpers import run_in_process
from segkit.cli import predict as predict_cli
from segkit.data.files.lazy import open_planes
from segkit.data.spec import DataSpec
from segkit.inference.predict import InferenceConfig, predict_bands, predict_image
from segkit.models import UNetModule

RNG = np.random.default_rng(7)


def cells(height: int, width: int, planes: int = 0) -> np.ndarray:
    """16-bit images of bright discs on a dim, noisy background (one per plane when ``planes``)."""
    shape = (planes or 1, height, width)
    yy, xx = np.mgrid[:height, :width]
    stack = RNG.normal(600, 40, shape)
    for plane in stack:
        for _ in range(6):
            y, x, r = RNG.integers(0, height), RNG.integers(0, width), RNG.integers(5, 12)
            plane[(yy - y) ** 2 + (xx - x) ** 2 < r * r] += 9000
    stack = np.clip(stack, 0, 65535).astype(np.uint16)
    return stack if planes else stack[0]


def write_ome_zarr(path: Path, array: np.ndarray, axes: str, chunks: tuple[int, ...], scale: list[float]) -> None:
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", shape=array.shape, chunks=chunks, dtype=array.dtype)[...] = array
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a.lower()} for a in axes],
                                   "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]


@pytest.mark.parametrize("tile", [(16, 16), (48, 80), (112, 32)])
def test_a_tiled_16_bit_tiff_reads_any_window_exactly(tmp_path: Path, tile: tuple[int, int]) -> None:
    image = cells(333, 517)  # sides that are no multiple of any tile
    tifffile.imwrite(tmp_path / "a.tif", image, tile=tile, compression="zlib")
    (plane,) = open_planes(tmp_path / "a.tif")
    assert plane.shape == (333, 517, 1) and plane.dtype == np.uint16
    for rows, cols in [(slice(0, 1), slice(0, 517)), (slice(31, 97), slice(250, 517)), (slice(300, 333), slice(5, 6))]:
        np.testing.assert_array_equal(plane[rows, cols][..., 0], image[rows, cols])
    plane.close()


def test_z_and_t_are_planes_and_channels_stay_channels(tmp_path: Path) -> None:
    stack = cells(40, 50, planes=6).reshape(2, 3, 40, 50)
    tifffile.imwrite(tmp_path / "tz.tif", stack, imagej=True, metadata={"axes": "TZYX"})
    planes = open_planes(tmp_path / "tz.tif", in_channels=1)
    assert len(planes) == 6 and planes[4].shape == (40, 50, 1)
    np.testing.assert_array_equal(planes[4][:, :][..., 0], stack[1, 1])
    rgb = RNG.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    (plane,) = open_planes(tmp_path / "rgb.tif", in_channels=3)
    np.testing.assert_array_equal(plane[:, :], rgb)


def test_an_unlabelled_leading_axis_is_channels_only_when_the_model_takes_that_many(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "n.tif", cells(30, 20, planes=3), photometric="minisblack")
    assert len(open_planes(tmp_path / "n.tif", in_channels=1)) == 3  # a stack of 3 grey planes
    (three,) = open_planes(tmp_path / "n.tif", in_channels=3)  # one 3-channel image
    assert three.shape == (30, 20, 3)


def test_ome_zarr_planes_axes_and_pixel_size(tmp_path: Path) -> None:
    stack = cells(70, 90, planes=4)
    write_ome_zarr(tmp_path / "s.ome.zarr", stack, "ZYX", (1, 37, 53), [2.0, 0.325, 0.325])
    planes = open_planes(tmp_path / "s.ome.zarr", in_channels=1)
    assert len(planes) == 4 and planes[0].pixel_size == (0.325, 0.325) and planes[0].plane_axes == "Z"
    np.testing.assert_array_equal(planes[3][10:60, 40:90][..., 0], stack[3, 10:60, 40:90])


def test_predicting_a_lazy_image_equals_predicting_it_in_memory(tmp_path: Path) -> None:
    image = cells(150, 130)
    tifffile.imwrite(tmp_path / "a.tif", image, tile=(32, 48))
    (plane,) = open_planes(tmp_path / "a.tif")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1)).eval()
    config = InferenceConfig(window=48, overlap=0.25)
    lazy = predict_image(net, plane, [0.5], [0.25], config)
    in_memory = predict_image(net, image, [0.5], [0.25], config)
    np.testing.assert_array_equal(lazy, in_memory)
    bands = list(predict_bands(net, plane, [0.5], [0.25], config, probabilities=True))
    assert sum(rows.shape[0] for _, rows, _ in bands) == 150 and bands[0][2].shape[:2] == (3, bands[0][1].shape[0])


@pytest.fixture(scope="module")
def grey_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-channel, 2-class U-Net checkpoint that stores 16-bit percentile scaling."""
    spec = DataSpec.of(2, None, 1, mean=[0.5], std=[0.25],
                       intensity={"mode": "percentile", "percentiles": [1.0, 99.8], "value_range": None})
    torch.manual_seed(0)
    module = UNetModule(num_classes=2, in_channels=1, depth=1, base_width=4, data_spec=spec)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("grey_run") / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def predict_cli_run(ckpt: Path, source: Path, output: Path, tmp_path: Path, *extra: str) -> None:
    result = run_in_process(predict_cli.main, [f"ckpt_path={ckpt}", f"input={source}", f"output={output}",
                                               "progress_bar=false", "inference.window=64", *extra], tmp_path)
    assert result.code == 0, result.stderr[-3000:]


def test_a_z_stack_predicts_to_a_label_stack_with_its_axes_and_pixel_size(grey_checkpoint: Path, tmp_path: Path) -> None:
    stack = cells(90, 110, planes=5)
    source = tmp_path / "in" / "stack.ome.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, stack, tile=(32, 32), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    predict_cli_run(grey_checkpoint, source.parent, tmp_path / "out", tmp_path, "save.instances=true")
    with tifffile.TiffFile(tmp_path / "out" / "stack.tif") as tif:
        assert (tif.series[0].axes, tif.series[0].shape) == ("ZYX", (5, 90, 110))
        labels = tif.asarray()
    assert open_planes(tmp_path / "out" / "stack.tif")[0].pixel_size == (0.5, 0.5)
    # Every plane is predicted as that plane alone would be: slices, not channels.
    tifffile.imwrite(tmp_path / "in" / "plane3.tif", stack[3])
    predict_cli_run(grey_checkpoint, tmp_path / "in" / "plane3.tif", tmp_path / "one", tmp_path)
    np.testing.assert_array_equal(labels[3], tifffile.imread(tmp_path / "one" / "plane3.tif"))
    with tifffile.TiffFile(tmp_path / "out" / "stack_instances.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].dtype in (np.uint16, np.uint32)


def test_an_ome_zarr_predicts_to_an_ome_zarr(grey_checkpoint: Path, tmp_path: Path) -> None:
    image = cells(100, 140)
    (tmp_path / "in").mkdir()
    write_ome_zarr(tmp_path / "in" / "slide.ome.zarr", image[None], "CYX", (1, 45, 45), [1.0, 0.25, 0.25])
    predict_cli_run(grey_checkpoint, tmp_path / "in" / "slide.ome.zarr", tmp_path / "out", tmp_path)
    group = zarr.open_group(str(tmp_path / "out" / "slide.zarr"), mode="r")
    meta = group.attrs["multiscales"][0]
    assert [axis["name"] for axis in meta["axes"]] == ["y", "x"] and group["0"].shape == (100, 140)
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.25, 0.25]
    tifffile.imwrite(tmp_path / "in" / "same.tif", image)
    predict_cli_run(grey_checkpoint, tmp_path / "in" / "same.tif", tmp_path / "tif", tmp_path)
    np.testing.assert_array_equal(group["0"][:], tifffile.imread(tmp_path / "tif" / "same.tif"))


def test_a_stack_cannot_become_one_png(grey_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "z.tif", cells(30, 30, planes=3), imagej=True, metadata={"axes": "ZYX"})
    result = run_in_process(predict_cli.main, [f"ckpt_path={grey_checkpoint}", f"input={tmp_path / 'in' / 'z.tif'}",
                                               f"output={tmp_path / 'out'}", "save.format=png"], tmp_path)
    assert result.code == 2 and "save.format=tiff" in result.stderr
    assert not (tmp_path / "out" / "z.png").exists()


def test_training_refuses_a_z_stack_as_channels(tmp_path: Path) -> None:
    from segkit.data.files.readers import read_header
    from segkit.errors import SegkitError

    tifffile.imwrite(tmp_path / "z.tif", cells(30, 30, planes=4), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(SegkitError, match="Z stack of 4 planes.*each plane as its own file"):
        read_header(tmp_path / "z.tif")
