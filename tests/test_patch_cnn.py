"""The sliding-window patch CNN, its exact dense form and the window sampler."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from segkit.data.windows import WindowSampler, random_dihedral
from segkit.geometry import mirror_pad
from segkit.nets import PatchCNN, densify, naive_window_scores
from segkit.nets.patch_cnn import macs_per_window

STRATEGIES = ["fragments", "dilated"]


def test_n4_is_the_papers_table() -> None:
    net = PatchCNN(num_classes=2, in_channels=1, preset="n4")
    assert net.window == 95
    assert sum(p.numel() for p in net.parameters()) == 219_290
    sizes, x = [], torch.zeros(1, 1, 95, 95)
    for layer in net:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            sizes.append(tuple(x.shape[1:]))
    assert sizes == [(48, 92, 92), (48, 46, 46), (48, 42, 42), (48, 21, 21), (48, 18, 18), (48, 9, 9), (48, 6, 6), (48, 3, 3)]
    assert [layer.out_features for layer in net if isinstance(layer, nn.Linear)] == [200, 2]
    # Conv outputs x kernel volume, then the two Linears: ~1.2e8, the paper's redundancy figure.
    expected = (92**2 * 48 * 16 + 42**2 * 48 * 48 * 25 + 18**2 * 48 * 48 * 16 + 6**2 * 48 * 48 * 16
                + 48 * 3 * 3 * 200 + 200 * 2)
    assert macs_per_window(net, 95, 1) == expected == 121_464_592


@functools.lru_cache(maxsize=None)
def naive_64px(preset: str) -> tuple[PatchCNN, torch.Tensor, torch.Tensor]:
    """A random net, a 64 x 64 image and the naive scores of its 4,096 windows (computed once).
    The preset's topology (kernels, poolings, window) at a quarter of its width: equality of
    the dense form does not depend on channel counts, and the naive scan is ~10x faster."""
    torch.manual_seed(0)
    net = PatchCNN(num_classes=2, in_channels=1, preset=preset, maps=12, hidden=50).eval()
    image = torch.rand(1, 64, 64)
    return net, image, naive_window_scores(net, image)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("preset", ["n4", "n1", "n3"])
def test_dense_equals_naive_at_every_pixel_of_a_64px_image(preset: str, strategy: str) -> None:
    net, image, naive = naive_64px(preset)
    with torch.no_grad():
        dense = densify(net, strategy=strategy)(image[None])[0]
    assert dense.shape == naive.shape == (2, 64, 64)
    assert (dense - naive).abs().max() < 1e-5


def test_dense_equals_naive_at_random_pixels_of_a_512px_image() -> None:
    torch.manual_seed(1)
    net = PatchCNN(num_classes=2, in_channels=1, preset="n4").eval()
    image = torch.rand(1, 512, 512)
    pixels = torch.randint(512, (96, 2))
    pixels[:4] = torch.tensor([[0, 0], [511, 511], [0, 511], [511, 0]])  # corners: mirrored context
    with torch.no_grad():
        dense = densify(net)(image[None])[0]
    naive = naive_window_scores(net, image, pixels=pixels)
    assert (dense[:, pixels[:, 0], pixels[:, 1]].T - naive).abs().max() < 1e-5


def odd_stack() -> nn.Sequential:
    """Not a PatchCNN: 2 channels, ReLU/Sigmoid, a 3x3 stride-3 pool, a pool that drops a row
    (floor), an even window, three Linear layers."""
    net = nn.Sequential(
        nn.Conv2d(2, 5, 3), nn.ReLU(), nn.MaxPool2d(3, stride=3), nn.Conv2d(5, 4, 2), nn.Sigmoid(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 7), nn.ReLU(), nn.Linear(7, 6), nn.Linear(6, 3),
    )
    net.window = 20  # 20 -> 18 -> 6 -> 5 -> 2 (the pool drops the fifth row)
    return net.eval()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("size", [(37, 29), (8, 11)], ids=["larger", "smaller-than-window"])
def test_densify_is_exact_for_any_conv_pool_linear_stack(strategy: str, size: tuple[int, int]) -> None:
    torch.manual_seed(2)
    net = odd_stack()
    image = torch.randn(2, *size)
    with torch.no_grad():
        dense = densify(net, strategy=strategy)(image[None])[0]
    assert (dense - naive_window_scores(net, image)).abs().max() < 1e-5


@pytest.mark.parametrize("layer", [nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2, ceil_mode=True), nn.BatchNorm2d(1)],
                         ids=["padded-conv", "ceil-pool", "batchnorm"])
def test_densify_refuses_layers_it_cannot_make_exact(layer: nn.Module) -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 3), layer, nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="densify"):
        densify(net, window=7)


def test_the_dense_form_reads_the_window_nets_weights_live() -> None:
    net = PatchCNN(num_classes=2, in_channels=1, preset="n1").eval()
    dense = densify(net)
    assert list(dense.parameters()) == []
    image = torch.rand(1, 1, 20, 20)
    before = dense(image).detach().clone()
    with torch.no_grad():
        net[-1].bias += 1.0
    assert torch.allclose(dense(image), before + 1.0, atol=1e-5)


def test_mirror_padding_repeats_reflections_beyond_the_image() -> None:
    row = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    assert mirror_pad(row, 5, 3, 0, 0)[0, 0, 0].tolist() == [2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2]


def test_window_sampler_balances_classes_and_labels_the_centre() -> None:
    torch.manual_seed(3)
    image = torch.arange(30 * 40, dtype=torch.float32).view(1, 1, 30, 40)
    mask = torch.zeros(1, 30, 40, dtype=torch.long)
    mask[0, :3, :5] = 1  # 15 membrane-like pixels among 1,200
    mask[0, 10, :] = 255  # ignored
    sampler = WindowSampler(windows_per_image=40, balance="classes", dihedral=False)
    windows, labels = sampler(image, mask, window=9)
    assert windows.shape == (40, 1, 9, 9) and (labels == 1).sum() == 20 and (labels == 0).sum() == 20
    # The centre of each window is the labelled pixel: its value encodes (row, col).
    centres = windows[:, 0, 4, 4].long()
    assert torch.equal(mask[0, centres // 40, centres % 40], labels)
    assert (labels != 255).all()
    uniform = WindowSampler(windows_per_image=400, balance="none")(image, mask, window=9)[1]
    assert (uniform == 1).float().mean() < 0.1  # unbalanced: mostly the frequent class


def test_dihedral_transforms_keep_the_centre_and_cover_all_eight() -> None:
    torch.manual_seed(4)
    window = torch.randn(1, 2, 5, 5)
    out = random_dihedral(window.expand(400, 2, 5, 5).contiguous())
    assert torch.equal(out[:, :, 2, 2], window[:, :, 2, 2].expand(400, 2))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8
