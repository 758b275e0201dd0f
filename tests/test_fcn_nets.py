"""FCN nets and convolutionalize: every FCN fact of ../shared/PAPERS.md that the nets carry."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import alexnet, vgg16

from segkit.nets import FCN8s, FCN8sAtOnce, FCN16s, FCN32s, convolutionalize
from segkit.nets.fcn import bilinear_kernel
from segkit.nets.vgg import linear_to_conv, vgg16_features

FCNS = [FCN32s, FCN16s, FCN8s, FCN8sAtOnce]
THIN = 0.125  # same topology, 1/8 of the channels


def _sizes(count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(1, 1), (600, 600), (500, 375)] + [(rng.randint(1, 600), rng.randint(1, 600)) for _ in range(count)]


@pytest.mark.parametrize("cls", FCNS, ids=lambda c: c.__name__)
def test_output_has_the_input_size_for_sizes_from_1_to_600(cls: type[FCN32s]) -> None:
    net = cls(num_classes=3, width_mult=THIN).eval()
    with torch.no_grad():
        for height, width in _sizes(6, seed=hash(cls.__name__) % 1000):
            assert net(torch.randn(1, 3, height, width)).shape == (1, 3, height, width), (height, width)


def test_floor_mode_pooling_breaks_the_final_crop() -> None:
    # Caffe rounds pooled sizes up; with floor mode some sizes leave too small a map to crop.
    net = FCN32s(num_classes=2, width_mult=THIN).eval()
    for module in net.features:
        if isinstance(module, nn.MaxPool2d):
            module.ceil_mode = False
    broken = []
    with torch.no_grad():
        for size in range(1, 120, 7):
            try:
                if net(torch.randn(1, 3, size, size + 3)).shape[-2:] != (size, size + 3):
                    broken.append(size)  # cropped to the wrong size
            except RuntimeError:
                broken.append(size)  # pool5 too small for fc6's 7x7
    assert len(broken) >= 5, broken


def test_reference_layout_padding_100_ceil_mode_and_crop_offsets() -> None:
    features = vgg16_features()
    assert features[0].padding == (100, 100)
    assert all(m.padding == (1, 1) for m in features[1:] if isinstance(m, nn.Conv2d))
    pools = [m for m in features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.ceil_mode and p.kernel_size == 2 and p.stride == 2 for p in pools)
    assert FCN32s.final_offset == 19
    assert (FCN16s.pool4_offset, FCN16s.final_offset) == (5, 27)
    assert (FCN8s.pool4_offset, FCN8s.pool3_offset, FCN8s.final_offset) == (5, 9, 31)
    assert (FCN8sAtOnce.pool4_scale, FCN8sAtOnce.pool3_scale) == (0.01, 0.0001)


def test_fcn32s_crop_offset_19_centres_the_upsampled_map() -> None:
    # With pool5 -> score of size s, upscore gives 32 * (s - 1) + 64; the reference crop at 19
    # leaves exactly the input. Check the arithmetic on the real layers for one size.
    net = FCN32s(num_classes=2, width_mult=THIN).eval()
    x = torch.randn(1, 3, 100, 100)
    with torch.no_grad():
        full = net.upscore(net.score(net.features(x)))
    assert full.shape[-1] >= 19 + 100
    assert torch.equal(net(x), full[..., 19:119, 19:119])


def test_bilinear_kernel_values_and_diagonality() -> None:
    kernel = bilinear_kernel(3, 4)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(kernel[1, 1], torch.outer(taps, taps))
    off_diagonal = kernel.clone()
    off_diagonal[range(3), range(3)] = 0
    assert off_diagonal.abs().sum() == 0
    # k=64 (32x): the peak taps sit at the centre, 1 - 0.5/32.
    assert math.isclose(bilinear_kernel(1, 64)[0, 0, 31, 31].item(), (1 - 0.5 / 32) ** 2, rel_tol=1e-6)


def test_bilinear_upsampling_of_a_constant_is_constant_inside() -> None:
    net = FCN32s(num_classes=2, width_mult=THIN)
    coarse = torch.ones(1, 2, 5, 5)
    up = net.upscore(coarse)
    assert torch.allclose(up[..., 32:-32, 32:-32], torch.ones(1)), "bilinear weights must sum to 1"


@pytest.mark.parametrize("cls", FCNS, ids=lambda c: c.__name__)
def test_upsampling_is_bias_free_and_fixed_by_default(cls: type[FCN32s]) -> None:
    net = cls(num_classes=4, width_mult=THIN)
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == {FCN32s: 1, FCN16s: 2}.get(cls, 3)
    assert all(up.bias is None and not up.weight.requires_grad for up in ups)
    learned = cls(num_classes=4, width_mult=THIN, learn_upsampling=True)
    trainable = [m for m in learned.modules() if isinstance(m, nn.ConvTranspose2d) and m.weight.requires_grad]
    # The paper learns the 2x upsamplings; the final one stays bilinear.
    assert len(trainable) == len(ups) - 1


@pytest.mark.parametrize("cls", FCNS, ids=lambda c: c.__name__)
def test_zero_init_first_summed_loss_is_n_valid_times_ln_c(cls: type[FCN32s]) -> None:
    num_classes = 21
    net = cls(num_classes=num_classes, width_mult=THIN).eval()
    target = torch.randint(0, num_classes, (2, 45, 61))
    target[:, :5] = 255
    logits = net(torch.randn(2, 3, 45, 61))
    assert logits.abs().max() == 0  # every score layer starts at zero
    loss = F.cross_entropy(logits, target, ignore_index=255, reduction="sum")
    n_valid = (target != 255).sum().item()
    assert loss.item() == pytest.approx(n_valid * math.log(num_classes), rel=1e-5)


@pytest.mark.parametrize("cls", FCNS, ids=lambda c: c.__name__)
def test_zero_score_layers_over_a_random_backbone_still_learn(cls: type[FCN32s]) -> None:
    net = cls(num_classes=3, width_mult=THIN)
    logits = net(torch.randn(1, 3, 64, 64))
    F.cross_entropy(logits, torch.randint(0, 3, (1, 64, 64))).backward()
    assert net.score_fr.weight.grad.abs().sum() > 0


def test_random_backbone_keeps_the_activation_scale_through_fc7() -> None:
    # PyTorch's default conv init would shrink a unit-variance input ~1000x by fc7.
    torch.manual_seed(0)
    net = FCN32s(num_classes=3, width_mult=THIN).eval()
    with torch.no_grad():
        fc7 = net.fc(net.features(torch.randn(2, 3, 64, 64)))
    assert 0.1 < fc7.pow(2).mean().sqrt().item() < 10


def test_parameter_counts_match_the_paper() -> None:
    def learnable(net: nn.Module) -> int:
        return sum(p.numel() for p in net.parameters() if p.requires_grad)

    assert learnable(FCN32s(num_classes=21)) == 134_346_581
    # Each skip adds one 1x1 score layer: 512 * 21 + 21 (pool4), 256 * 21 + 21 (pool3).
    assert learnable(FCN16s(num_classes=21)) == 134_346_581 + 512 * 21 + 21
    assert learnable(FCN8s(num_classes=21)) == 134_346_581 + 512 * 21 + 21 + 256 * 21 + 21


def test_vgg16_features_match_torchvision_key_for_key() -> None:
    ours = vgg16_features().state_dict()
    theirs = vgg16().features.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("make", [lambda: vgg16(num_classes=10), lambda: alexnet(num_classes=7)], ids=["vgg16", "alexnet"])
def test_convolutionalize_reproduces_the_classifier_at_224(make) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    classifier = make().eval()
    fcn = convolutionalize(classifier).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = classifier(x)
        dense = fcn(x)
    assert dense.shape[-2:] == (1, 1)
    assert torch.allclose(dense.flatten(1), expected, atol=1e-5)


def test_convolutionalize_gives_a_coarse_heatmap_on_larger_inputs() -> None:
    # One score vector per 32-px step: (288 - 224) / 32 + 1 = 3 rows, (256 - 224) / 32 + 1 = 2.
    # (Not equal to classifying each 224 window alone: the 3x3 convs' zero padding sees
    # neighbouring pixels inside the larger image.)
    torch.manual_seed(0)
    fcn = convolutionalize(vgg16(num_classes=4)).eval()
    with torch.no_grad():
        heatmap = fcn(torch.randn(1, 3, 288, 256))
    assert heatmap.shape == (1, 4, 3, 2)
    assert not torch.allclose(heatmap[..., 0, 0], heatmap[..., 2, 1])


def test_linear_that_reads_no_square_map_is_rejected() -> None:
    with pytest.raises(ValueError, match="square"):
        linear_to_conv(nn.Linear(8 * 6, 3), in_channels=8)
    with pytest.raises(ValueError, match="features"):
        convolutionalize(nn.Linear(3, 3))
