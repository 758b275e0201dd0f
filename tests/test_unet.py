"""segkit.nets.UNet: same-size logits for any input, every parameter trained, bad args refused."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from segkit.nets import UNet

SIZES = [(97, 131), (1, 1), (15, 200), (64, 64)]
CONFIGS = list(itertools.product((1, 2, 3, 4), ("transpose", "bilinear"), (True, False)))


@pytest.mark.parametrize(
    ("depth", "upsampling", "batch_norm"),
    CONFIGS,
    ids=[f"depth{d}-{u}-{'bn' if b else 'nobn'}" for d, u, b in CONFIGS],
)
def test_output_has_the_input_size_for_any_height_and_width(
    depth: int, upsampling: str, batch_norm: bool
) -> None:
    torch.manual_seed(0)
    net = UNet(num_classes=3, in_channels=2, depth=depth, base_width=2,
               batch_norm=batch_norm, upsampling=upsampling)
    for height, width in SIZES:
        # Batch of 2: batch norm in training mode needs more than one value per channel.
        logits = net(torch.randn(2, 2, height, width))
        assert logits.shape == (2, 3, height, width), (height, width)
        assert torch.isfinite(logits).all()


def test_eval_mode_works_on_a_single_tiny_image() -> None:
    net = UNet(num_classes=4, in_channels=1, depth=4, base_width=2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 1, 1)).shape == (1, 4, 1, 1)
        assert net(torch.randn(1, 1, 3, 5)).shape == (1, 4, 3, 5)


def test_padding_does_not_leak_a_batch_dependency() -> None:
    # Each image is processed on its own: cropping the padded output must not mix samples.
    net = UNet(num_classes=2, in_channels=3, depth=3, base_width=4).eval()
    images = torch.randn(3, 3, 21, 35)
    with torch.no_grad():
        together = net(images)
        alone = torch.cat([net(image[None]) for image in images])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_gradients_reach_every_parameter(upsampling: str, batch_norm: bool) -> None:
    torch.manual_seed(0)
    net = UNet(num_classes=3, in_channels=3, depth=3, base_width=4,
               batch_norm=batch_norm, upsampling=upsampling, dropout=0.1)
    images = torch.randn(2, 3, 37, 29)
    target = torch.randint(0, 3, (2, 37, 29))
    F.cross_entropy(net(images), target).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_depth_and_width_set_the_levels() -> None:
    net = UNet(num_classes=5, in_channels=3, depth=2, base_width=8)
    assert len(net.downs) == 2 and len(net.ups) == 2
    assert net.inc[0].out_channels == 8
    assert net.downs[-1][0].out_channels == 8 * 2**2
    assert net.head.out_channels == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 0},
        {"depth": -1},
        {"base_width": 0},
        {"num_classes": 0},
        {"upsampling": "nearest"},
    ],
    ids=["depth0", "depth-1", "width0", "classes0", "upsampling"],
)
def test_bad_arguments_raise_value_error(kwargs: dict) -> None:
    arguments = {"num_classes": 3, "in_channels": 3, "depth": 2, "base_width": 4, **kwargs}
    with pytest.raises(ValueError):
        UNet(**arguments)
