"""Test-time augmentation: exact inverses, equivariant nets unchanged, hand-computed view
averages, scales, and ``inference.tta`` in segkit-eval and segkit-predict."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    CPU,
    EVAL_CMD,
    CliRun,
    compose_config,
    config_options,
    console_command,
    describe,
    run_cli,
)
from hydra.utils import get_class, instantiate
from PIL import Image

from segkit.errors import SegkitError
from segkit.inference.predict import InferenceConfig, predict_image
from segkit.inference.tta import TTA_MODES, TestTimeAugmentation, tta_from_config

PREDICT_CMD = console_command("segkit-predict", "segkit.cli.predict")


# Hand-written views (plain index reversal and transposition, no torch.flip/rot90): pairs of
# (transform, inverse) of an (..., H, W) tensor.
def hflip(x: torch.Tensor) -> torch.Tensor:
    return x[..., torch.arange(x.shape[-1] - 1, -1, -1)]


def vflip(x: torch.Tensor) -> torch.Tensor:
    return x[..., torch.arange(x.shape[-2] - 1, -1, -1), :]


def transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


FLIP_VIEWS = [(lambda x: x, lambda y: y), (hflip, hflip), (vflip, vflip)]
D4_VIEWS = [
    (lambda x: x, lambda y: y),
    (hflip, hflip),
    (vflip, vflip),
    (lambda x: hflip(vflip(x)), lambda y: vflip(hflip(y))),
    (transpose, transpose),
    (lambda x: hflip(transpose(x)), lambda y: transpose(hflip(y))),
    (lambda x: vflip(transpose(x)), lambda y: transpose(vflip(y))),
    (lambda x: hflip(vflip(transpose(x))), lambda y: transpose(vflip(hflip(y)))),
]


def hand_average(net, images: torch.Tensor, views) -> torch.Tensor:
    return sum(inverse(net(forward(images))) for forward, inverse in views) / len(views)


def asymmetric_net(in_channels: int = 3, classes: int = 4) -> torch.nn.Module:
    """A conv net with a random (asymmetric) 3x3 kernel plus a horizontal coordinate ramp:
    equivariant to no flip or rotation."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(in_channels, classes, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ramp = torch.linspace(0, 1, x.shape[-1])
            return self.conv(x) + ramp

    return Net().eval()


@pytest.mark.parametrize("mode", ["flip", "d4"])
def test_every_inverse_is_exact_and_the_views_are_the_groups(mode: str) -> None:
    tta = TestTimeAugmentation(mode)
    x = torch.randn(2, 3, 5, 7)
    for transform in tta.transforms:
        assert torch.equal(transform.inverse(transform.forward(x)), x), transform.name
        assert torch.equal(transform.forward(transform.inverse(x)), x), transform.name
    # The views are exactly the hand-written ones (as a set; the identity first): no duplicate,
    # no transform that is not in the group.
    views = FLIP_VIEWS if mode == "flip" else D4_VIEWS
    got = [transform.forward(x) for transform in tta.transforms]
    expected = [forward(x) for forward, _ in views]
    assert torch.equal(got[0], x)
    assert len(got) == len(expected)
    for image in expected:
        assert sum(g.shape == image.shape and torch.equal(g, image) for g in got) == 1


def test_a_per_pixel_net_is_unchanged_by_flip_and_d4() -> None:
    torch.manual_seed(1)
    net = torch.nn.Conv2d(3, 5, kernel_size=1).eval()
    images = torch.randn(2, 3, 9, 14)
    with torch.no_grad():
        plain = net(images)
        for mode in ("flip", "d4"):
            assert torch.allclose(TestTimeAugmentation(mode)(net, images), plain, atol=1e-6), mode


def test_flip_tta_of_an_asymmetric_net_is_the_mean_of_the_three_hand_flipped_views() -> None:
    net = asymmetric_net()
    images = torch.randn(2, 3, 11, 16)
    with torch.no_grad():
        plain = net(images)
        result = TestTimeAugmentation("flip")(net, images)
        expected = hand_average(net, images, FLIP_VIEWS)
    assert not torch.allclose(result, plain, atol=1e-3)
    assert torch.allclose(result, expected, atol=1e-6)


def test_d4_tta_of_an_asymmetric_net_on_a_non_square_image_is_the_mean_of_the_eight_views() -> None:
    net = asymmetric_net()
    images = torch.randn(1, 3, 5, 7)
    shapes: list[tuple[int, int]] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape[-2:]))
        return net(x)

    with torch.no_grad():
        result = TestTimeAugmentation("d4")(recording, images)
        expected = hand_average(net, images, D4_VIEWS)
    assert sorted(shapes) == [(5, 7)] * 4 + [(7, 5)] * 4
    assert result.shape == (1, 4, 5, 7)
    assert torch.allclose(result, expected, atol=1e-6)


def test_scales_keep_a_per_pixel_nets_logits_in_the_interior() -> None:
    # On a linear ramp, bilinear down- and upsampling is exact away from the border, and a 1x1
    # conv commutes with it: the interior must match the plain pass; on noise it must not.
    torch.manual_seed(2)
    net = torch.nn.Conv2d(3, 4, kernel_size=1).eval()
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    ramp = torch.stack([0.1 * rows, 0.05 * cols, 0.03 * rows - 0.02 * cols])[None]
    tta = TestTimeAugmentation("none", scales=(0.5, 1.0, 2.0))
    shapes: list[tuple[int, int]] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape[-2:]))
        return net(x)

    with torch.no_grad():
        result, plain = tta(recording, ramp), net(ramp)
        assert result.shape == plain.shape
        assert sorted(shapes) == [(16, 24), (32, 48), (64, 96)]
        assert torch.allclose(result[..., 2:-2, 2:-2], plain[..., 2:-2, 2:-2], atol=1e-4)
        noise = torch.randn(1, 3, 32, 48)
        assert (tta(net, noise) - net(noise))[..., 2:-2, 2:-2].abs().max() > 0.05


def test_identity_calls_the_net_once_on_the_untouched_images() -> None:
    images = torch.randn(1, 3, 4, 6)
    calls: list[torch.Tensor] = []
    out = torch.zeros(1, 2, 4, 6)

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        return out

    tta = TestTimeAugmentation()
    assert tta.is_identity and TestTimeAugmentation("none", [1.0]).is_identity
    assert not TestTimeAugmentation("none", (1.0, 1.5)).is_identity and not TestTimeAugmentation("flip").is_identity
    assert tta(logits_fn, images) is out
    assert len(calls) == 1 and calls[0] is images
    assert TTA_MODES == ("none", "flip", "d4")


@pytest.mark.parametrize(("mode", "scales", "message"), [
    ("rotate", (1.0,), r"'rotate'.*none, flip, d4"),
    ("flip", (1.0, 0.0), r"0\.0"),
    ("flip", (-0.5,), r"-0\.5"),
    ("flip", (), r"empty"),
])
def test_a_bad_mode_or_scale_is_a_clear_value_error(mode: str, scales: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TestTimeAugmentation(mode, scales)


def test_config_values_give_one_line_errors_naming_the_key() -> None:
    with pytest.raises(SegkitError, match=r"inference\.tta='rotate': use none .*flip .*d4"):
        tta_from_config("rotate", [1.0])
    with pytest.raises(SegkitError, match=r"inference\.scales=\[0\]: use a list of positive numbers"):
        tta_from_config("none", [0])
    with pytest.raises(SegkitError, match=r"inference\.tta='x': use "):
        InferenceConfig(tta="x")
    assert InferenceConfig(tta="d4", scales=[1, 2]).scales == (1.0, 2.0)


@pytest.mark.parametrize("model", config_options("model"))
def test_every_architectures_evaluation_logits_go_through_tta(model: str) -> None:
    # The module's own evaluation forward (overlap-tile, dense patch CNN, ...) is what is averaged.
    cfg = compose_config("train", [f"model={model}"]).model
    cls = get_class(cfg._target_)
    for package in cls.requires_packages:  # optional extras (smp models)
        pytest.importorskip(package)
    module = instantiate(cfg, _convert_="all", num_classes=3, in_channels=2, **cls.contract_size).eval()
    images = torch.randn(1, 2, 21, 30)
    with torch.no_grad():
        assert torch.equal(module.evaluation_logits(images), module(images))  # none by default
        module.test_time_augmentation = TestTimeAugmentation("flip")
        flipped = module.evaluation_logits(images)
        assert torch.allclose(flipped, hand_average(module, images, FLIP_VIEWS), atol=1e-5)
        module.test_time_augmentation = TestTimeAugmentation("d4")
        assert module.evaluation_logits(images).shape == (1, 3, 21, 30)
    assert "test_time_augmentation" not in module.hparams
    assert not any("test_time" in key for key in module.state_dict())


def test_predict_image_averages_every_window_batch() -> None:
    net = asymmetric_net()
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    calls: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return net(x)

    slide = InferenceConfig(mode="slide", window=24, overlap=0.25, batch_size=2)
    predict_image(counting, image, [0.5] * 3, [0.25] * 3, slide)
    plain_calls = len(calls)
    calls.clear()
    predict_image(counting, image, [0.5] * 3, [0.25] * 3, replace(slide, tta="d4"))
    assert len(calls) == 8 * plain_calls

    # Whole image: the softmax of the hand-computed mean of the three flipped views.
    bands: list[np.ndarray] = []
    whole = InferenceConfig(mode="whole", tta="flip")
    predict_image(net, image, [0.5] * 3, [0.25] * 3, whole, on_probabilities=lambda top, p: bands.append(p))
    normalised = (torch.from_numpy(image).float().div(255).permute(2, 0, 1)[None] - 0.5) / 0.25
    with torch.no_grad():
        expected = hand_average(net, normalised, FLIP_VIEWS)[0].softmax(0).numpy()
    assert np.abs(bands[0] - expected).max() < 1e-5


def test_rescaled_views_of_a_valid_net_are_refused_and_its_module_takes_them(tmp_path: Path) -> None:
    import lightning as L
    from helpers import task_config

    from segkit.cli.predict import predict
    from segkit.models import UNetPaperModule

    torch.manual_seed(0)
    module = UNetPaperModule(num_classes=2, in_channels=1, depth=2, base_width=2, tile=20)
    grey = np.random.default_rng(3).integers(0, 256, (45, 38), dtype=np.uint8)
    with pytest.raises(SegkitError, match=r"inference\.scales=\[1\.0, 1\.5\]"):
        predict_image(module.net.eval(), grey, [0.5], [0.25], InferenceConfig(mode="tile", window=20, scales=[1.0, 1.5]))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "paper.ckpt")
    (tmp_path / "in").mkdir()
    Image.fromarray(grey).save(tmp_path / "in" / "slice.png")
    for tta, scales in (("d4", "[1.0]"), ("flip", "[0.75,1.0]")):
        overrides = [f"ckpt_path={tmp_path / 'paper.ckpt'}", f"input={tmp_path / 'in'}", f"output={tmp_path / tta}",
                     "mean=[0.5]", "std=[0.25]", "inference.mode=tile", "inference.window=20", "progress_bar=false",
                     f"inference.tta={tta}", f"inference.scales={scales}"]
        (written,) = predict(task_config("predict", overrides, tmp_path / f"run_{tta}"))
        with Image.open(written) as mask:
            assert mask.size == (38, 45)


@pytest.mark.timeout(300)
def test_segkit_eval_with_flip_tta_records_it_in_metrics_json(cli_run: CliRun, tmp_path: Path) -> None:
    proc = run_cli(EVAL_CMD, [f"ckpt_path={cli_run.last_ckpt}", "inference.tta=flip", *CPU], tmp_path / "ok")
    assert proc.returncode == 0, describe(proc)
    (written,) = list((tmp_path / "ok" / "logs" / "eval" / "runs").glob("*/metrics.json"))
    metrics = json.loads(written.read_text())
    assert metrics["tta"] == "flip" and metrics["scales"] == [1.0]
    assert metrics["command"] == "eval" and 0.0 <= metrics["val"]["mIoU"] <= 1.0

    bad = run_cli(EVAL_CMD, [f"ckpt_path={cli_run.last_ckpt}", "inference.tta=rotate", *CPU], tmp_path / "bad")
    assert bad.returncode == 2, describe(bad)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("segkit-eval: error:")]
    assert len(errors) == 1 and "inference.tta='rotate'" in errors[0] and "d4" in errors[0], bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout


@pytest.mark.timeout(300)
def test_segkit_predict_with_d4_tta_writes_masks_of_the_inputs_size(cli_run: CliRun, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (77, 131, 3), dtype=np.uint8)).save(photos / "wide.png")
    Image.fromarray(rng.integers(0, 256, (61, 45, 3), dtype=np.uint8)).save(photos / "small.jpg")
    output = tmp_path / "masks"
    args = [f"ckpt_path={cli_run.last_ckpt}", f"input={photos}", f"output={output}", "inference.window=48",
            "inference.tta=d4", "progress_bar=false"]
    proc = run_cli(PREDICT_CMD, args, tmp_path)
    assert proc.returncode == 0, describe(proc)
    for stem, size in (("wide", (131, 77)), ("small", (45, 61))):
        with Image.open(output / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == size
