"""The paper's valid-convolution U-Net (Ronneberger et al. 2015) and overlap-tile prediction."""

from __future__ import annotations

import math

import pytest
import torch

from segkit.errors import SegkitError
from segkit.geometry import (
    round_up_to_grid,
    smallest_valid_output,
    valid_output_size,
    window_starts,
)
from segkit.inference import blend_weights, overlap_tile, sliding_window_logits
from segkit.models import UNetPaperModule
from segkit.nets import PaperUNet, UNet


def test_a_572_tile_gives_388_outputs_with_23_convolutions() -> None:
    net = PaperUNet(num_classes=2, in_channels=1, base_width=4)  # same geometry as the paper's width 64
    assert net(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 23
    assert net.context == 92


def test_parameter_count_and_channels_match_the_paper() -> None:
    net = PaperUNet(num_classes=2, in_channels=1)
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    assert [block[0].out_channels for block in net.downs] == [64, 128, 256, 512, 1024]
    assert [up.out_channels for up in net.up_convs] == [512, 256, 128, 64]
    assert all(up.kernel_size == (2, 2) and up.stride == (2, 2) for up in net.up_convs)


def test_valid_input_sizes_are_124_plus_16k_from_188() -> None:
    valid = [s for s in range(1, 700) if valid_output_size(s) is not None]
    assert valid[0] == 188
    assert all((s - 124) % 16 == 0 for s in valid)
    assert all(valid_output_size(s) == s - 184 for s in valid)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_the_closed_form_export_traces_rounds_up_as_the_search_over_valid_sizes(depth: int) -> None:
    net = PaperUNet(num_classes=2, in_channels=1, depth=depth, base_width=2)
    smallest = net.min_input_size - 2 * net.context
    for size in range(smallest, smallest + 70):
        expected = smallest_valid_output(size, net.context, depth)
        assert round_up_to_grid(size, smallest, net.size_multiple) == expected, size


def test_an_input_the_valid_convs_cannot_take_names_the_nearest_valid_sizes() -> None:
    net = PaperUNet(num_classes=2, in_channels=1, base_width=2)
    with pytest.raises(SegkitError, match=r"input height 500 .* use 492 or 508"):
        net(torch.zeros(1, 1, 500, 572))
    with pytest.raises(SegkitError, match=r"input width 100 .* use 188 "):
        net(torch.zeros(1, 1, 572, 100))


def test_weights_are_gaussian_with_std_sqrt_2_over_fan_in() -> None:
    torch.manual_seed(0)
    net = PaperUNet(num_classes=2, in_channels=1)
    for name, layer in [("conv 64->64", net.downs[0][2]), ("conv 512->1024", net.downs[4][0]),
                        ("up-conv 1024->512", net.up_convs[0])]:
        expected = math.sqrt(2.0 / (layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]))
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.02), name
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=0.05 * expected), name
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("size", [(45, 70), (130, 61)])
def test_overlap_tile_equals_one_pass_over_the_mirror_padded_image(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = PaperUNet(num_classes=3, in_channels=2, depth=2, base_width=3).double().eval()
    image = torch.randn(2, 2, *size, dtype=torch.float64)
    whole = overlap_tile(net, image)
    assert whole.shape == (2, 3, *size)
    for tile in (20, 36):
        tiled = overlap_tile(net, image, tile=tile)
        assert (tiled - whole).abs().max().item() < 1e-10, tile
    # Hand-built single pass: mirror 20 px of context each side (+ padding to a valid size).
    padded = torch.nn.functional.pad(image[..., :44, :44], (20, 20, 20, 20), mode="reflect")
    assert torch.allclose(net(padded)[..., :4, :4], whole[..., :4, :4], atol=1e-12)


def test_tiles_off_the_pooling_grid_would_not_be_exact() -> None:
    # Why tiles start at multiples of 2**depth: shift the image by 2 px and the values change.
    torch.manual_seed(0)
    net = PaperUNet(num_classes=2, in_channels=1, depth=2, base_width=3).double().eval()
    image = torch.randn(1, 1, 60, 60, dtype=torch.float64)
    shifted = overlap_tile(net, image[..., 2:, 2:])
    assert (shifted[..., 10:20, 10:20] - overlap_tile(net, image)[..., 12:22, 12:22]).abs().max() > 1e-6


def test_a_tile_the_net_cannot_take_is_a_clear_error() -> None:
    net = PaperUNet(num_classes=2, in_channels=1, depth=2, base_width=2)
    with pytest.raises(ValueError, match="tile=30: .* use tile=32"):
        overlap_tile(net, torch.zeros(1, 1, 50, 50), tile=30)
    with pytest.raises(SegkitError, match="model.tile=390: .* use model.tile=404"):
        UNetPaperModule(num_classes=2, base_width=2, tile=390)


def test_sliding_windows_of_a_same_size_net_blend_to_the_whole_image_prediction() -> None:
    # A net whose output at a pixel depends on that pixel only: any tiling reproduces it.
    net = torch.nn.Conv2d(1, 2, 1)
    image = torch.randn(1, 1, 50, 70)
    for blending in ("constant", "gaussian"):
        tiled = sliding_window_logits(net, image, window=(24, 32), overlap=0.5, blending=blending)
        assert torch.allclose(tiled, net(image), atol=1e-5), blending
    practical = UNet(num_classes=2, in_channels=1, depth=2, base_width=4).eval()
    with torch.no_grad():
        assert sliding_window_logits(practical, image, window=32).shape == (1, 2, 50, 70)


def test_window_positions_cover_the_image_and_gaussian_weights_peak_in_the_centre() -> None:
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(30, 40, 30) == [0]
    weights = blend_weights(33, 33, "gaussian")
    assert weights[16, 16] == weights.max() == 1.0 and weights.min() > 0
    centre_row = weights[16]
    assert torch.equal(centre_row, centre_row.flip(0))
    assert bool((centre_row[1:17] >= centre_row[:16]).all()) and centre_row[0] < centre_row[10] < centre_row[16]


def test_the_module_trains_on_crops_and_predicts_any_size_by_overlap_tile() -> None:
    module = UNetPaperModule(num_classes=2, in_channels=1, depth=2, base_width=4, tile=36)
    images, masks = torch.randn(2, 1, 40, 56), torch.randint(0, 2, (2, 40, 56))
    logits, targets = module.training_logits((images, masks))
    assert logits.shape == (2, 2, 40, 56) and targets is masks
    module.loss(logits, masks).backward()
    assert module.net.head.weight.grad is not None
    module.eval()
    with torch.no_grad():
        assert module(torch.randn(1, 1, 77, 91)).shape == (1, 2, 77, 91)
