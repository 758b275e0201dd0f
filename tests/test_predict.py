"""segkit-predict and band-wise prediction of images of any size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CliRun, console_command, describe, run_cli
from PIL import Image

from segkit.inference import overlap_tile, sliding_window_logits
from segkit.inference.predict import InferenceConfig, predict_image
from segkit.nets import PaperUNet

PREDICT_CMD = console_command("segkit-predict", "segkit.cli.predict")
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _normalised(image: Image.Image) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(image)).float().div(255).permute(2, 0, 1)
    return ((pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])[None]


def _random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("blending", ["constant", "gaussian"])
def test_band_by_band_slide_equals_blending_the_whole_image_at_once(blending: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 3, padding=1)).eval()
    image = _random_image(150, 97)
    config = InferenceConfig(mode="slide", window=40, overlap=0.5, blending=blending, batch_size=3)
    mask = predict_image(net, image, MEAN, STD, config)
    with torch.no_grad():
        expected = sliding_window_logits(net, _normalised(image), 40, overlap=0.5, blending=blending)
    assert mask.shape == (150, 97)
    assert np.array_equal(mask, expected[0].argmax(0).numpy())


def test_tile_mode_of_the_paper_unet_is_its_overlap_tile_prediction() -> None:
    torch.manual_seed(0)
    net = PaperUNet(num_classes=3, in_channels=3, depth=2, base_width=4).eval()
    image = _random_image(70, 101, seed=1)
    mask = predict_image(net, image, MEAN, STD, InferenceConfig(mode="tile", window=30))  # rounded up to 32
    with torch.no_grad():
        expected = overlap_tile(net, _normalised(image), tile=32)
    assert np.array_equal(mask, expected[0].argmax(0).numpy())


def test_probabilities_of_every_band_arrive_once_and_sum_to_one() -> None:
    net = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    rows: list[int] = []
    bands: list[np.ndarray] = []
    predict_image(net, _random_image(90, 60), MEAN, STD, InferenceConfig(window=32, overlap=0.25),
                  on_probabilities=lambda top, band: (rows.extend(range(top, top + band.shape[1])), bands.append(band)))
    assert rows == list(range(90))
    assert all(np.allclose(band.sum(0), 1, atol=1e-5) for band in bands)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    _random_image(77, 131).save(folder / "wide.png")
    _random_image(61, 45, seed=2).save(folder / "small.jpg")
    return folder


def test_predict_writes_a_palette_mask_of_each_inputs_size(cli_run: CliRun, photos: Path, tmp_path: Path) -> None:
    output = tmp_path / "masks"
    args = [f"ckpt_path={cli_run.last_ckpt}", f"input={photos}", f"output={output}", "inference.window=48",
            "save.overlay=true", "save.probabilities=true"]
    proc = run_cli(PREDICT_CMD, args, tmp_path)
    assert proc.returncode == 0, describe(proc)
    for stem, size in (("wide", (131, 77)), ("small", (45, 61))):
        with Image.open(output / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == size
            assert int(np.array(mask).max()) < 6  # shapes' classes
        with Image.open(output / f"{stem}_overlay.png") as overlay:
            assert overlay.size == size and overlay.mode == "RGB"
        probabilities = np.load(output / f"{stem}_probs.npy")
        assert probabilities.shape == (6, size[1], size[0])
        with Image.open(output / f"{stem}.png") as mask:
            # The mask is the argmax of float32 logits; float16 probabilities can tie (0.338 vs 0.338).
            top2 = np.sort(probabilities.astype(np.float32), axis=0)[-2:]
            clear = top2[1] - top2[0] > 2e-3
            assert clear.mean() > 0.9
            assert np.array_equal(np.array(mask)[clear], probabilities.argmax(0)[clear])
    assert sorted(p.name for p in photos.iterdir()) == ["small.jpg", "wide.png"]  # input untouched

    before = (output / "wide.png").read_bytes()
    refused = run_cli(PREDICT_CMD, args, tmp_path)
    assert refused.returncode == 2, describe(refused)
    assert "exists; pass overwrite=true" in refused.stderr
    assert (output / "wide.png").read_bytes() == before
    assert run_cli(PREDICT_CMD, [*args, "overwrite=true"], tmp_path).returncode == 0


def test_predict_never_writes_into_the_input_folder(cli_run: CliRun, photos: Path, tmp_path: Path) -> None:
    proc = run_cli(PREDICT_CMD, [f"ckpt_path={cli_run.last_ckpt}", f"input={photos}", f"output={photos / 'out'}"], tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert "inside the input's folder" in proc.stderr
    assert not (photos / "out").exists()


def test_a_checkpoint_moved_away_from_its_run_still_knows_its_normalisation(cli_run: CliRun, photos: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "model.ckpt"
    moved.parent.mkdir()
    moved.write_bytes(cli_run.last_ckpt.read_bytes())
    stored = torch.load(moved, weights_only=True)["segkit_data"]
    assert (stored["mean"], stored["std"]) == ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])  # conf/data/shapes.yaml
    proc = run_cli(PREDICT_CMD, [f"ckpt_path={moved}", f"input={photos / 'wide.png'}", f"output={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert (tmp_path / "out" / "wide.png").is_file()


def test_tile_mode_from_a_paper_unet_checkpoint_is_the_whole_images_overlap_tile(tmp_path: Path) -> None:
    import lightning as L
    from helpers import task_config

    from segkit.cli.predict import predict
    from segkit.models import UNetPaperModule

    torch.manual_seed(0)
    # Depth 4: twice the context (184 px) is not a multiple of the pooling stride 16, so padding
    # each window again (the module's own overlap-tile) would put it off the image's grid.
    module = UNetPaperModule(num_classes=2, in_channels=1, depth=4, base_width=2, tile=20)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "paper.ckpt")
    folder = tmp_path / "slices"
    folder.mkdir()
    grey = np.random.default_rng(3).integers(0, 256, (83, 70), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "slice.png")
    overrides = [f"ckpt_path={tmp_path / 'paper.ckpt'}", f"input={folder}", f"output={tmp_path / 'out'}",
                 "mean=[0.5]", "std=[0.25]", "inference.mode=tile", "inference.window=20", "progress_bar=false", "save.probabilities=true"]
    predict(task_config("predict", overrides, tmp_path / "run"))
    normalised = (torch.from_numpy(grey).float().div(255)[None, None] - 0.5) / 0.25
    with torch.no_grad():
        expected = overlap_tile(module.net.eval(), normalised, tile=20)[0].softmax(0).numpy()
    probabilities = np.load(tmp_path / "out" / "slice_probs.npy").astype(np.float32)
    assert np.abs(probabilities - expected).max() < 2e-3  # stored as float16


@pytest.mark.parametrize(("key", "value"), [("mode", "sliding"), ("blending", "cosine"), ("overlap", 1.0), ("window", 0)])
def test_a_bad_inference_setting_is_a_clear_error(key: str, value: object) -> None:
    from segkit.errors import SegkitError

    with pytest.raises(SegkitError, match=rf"inference\.{key}={value!r}: use "):
        InferenceConfig(**{key: value})
