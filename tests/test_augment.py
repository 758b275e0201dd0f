"""Microscopy augmentation of data=folder: D4 symmetries, elastic deformation and per-crop intensity
changes keep image and mask aligned, change only the image's values, and refuse bad settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torchvision import tv_tensors

from segkit.data import FolderDataModule
from segkit.data.augment import RandomIntensity
from segkit.data.sampling import SampleKey
from segkit.errors import SegkitError


def test_gamma_keeps_black_and_white_and_the_order_of_values() -> None:
    ramp = tv_tensors.Image(torch.linspace(0, 1, 101).view(1, 1, 101))
    torch.manual_seed(1)
    out = RandomIntensity(gamma=0.5, p=1.0)(ramp)
    assert out[0, 0, 0] == 0 and out[0, 0, -1] == 1 and not torch.equal(out, ramp)
    assert bool((out[0, 0, 1:] > out[0, 0, :-1]).all())


def test_gain_scales_every_pixel_alike_and_masks_pass_through() -> None:
    image = tv_tensors.Image(torch.rand(1, 8, 8) + 0.1)
    mask = tv_tensors.Mask(torch.randint(0, 3, (8, 8)))
    torch.manual_seed(2)
    out_image, out_mask = RandomIntensity(scale=0.3, p=1.0)(image, mask)
    ratio = out_image / image
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio)) and 0.7 <= float(ratio.flatten()[0]) <= 1.3
    assert torch.equal(out_mask, mask)


def test_noise_is_zero_mean_and_at_most_its_level() -> None:
    image = tv_tensors.Image(torch.full((1, 200, 200), 0.5))
    torch.manual_seed(3)
    difference = RandomIntensity(noise=0.05, p=1.0)(image) - image
    assert abs(float(difference.mean())) < 0.005 and 0 < float(difference.std()) <= 0.05 * 1.05


def test_off_switches_change_nothing_and_bad_widths_are_refused() -> None:
    image = tv_tensors.Image(torch.rand(1, 5, 5))
    assert torch.equal(RandomIntensity()(image), image)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        RandomIntensity(gamma=-0.1)


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16-bit images of bright discs whose binary masks are exactly ``image > 20000``."""
    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            yy, xx = np.mgrid[:70, :90]
            fg = np.zeros((70, 90), bool)
            for _ in range(5):
                y, x, r = rng.integers(5, 65), rng.integers(5, 85), rng.integers(4, 12)
                fg |= (yy - y) ** 2 + (xx - x) ** 2 < r * r
            tifffile.imwrite(root / split / "images" / f"{i}.tif", np.where(fg, 40000, 1000).astype(np.uint16))
            tifffile.imwrite(root / split / "masks" / f"{i}.tif", fg.astype(np.uint8))
    return root


def samples(root: Path, **augment: object) -> list[tuple[torch.Tensor, ...]]:
    dm = FolderDataModule(root=str(root), num_classes=2, in_channels=1, mask_type="binary", crop_size=48,
                          num_workers=0, intensity="range", value_range=[0, 65535], mean=[0.0], std=[1.0], **augment)
    dm.setup("fit")
    return [dm.train_set[SampleKey(i % 3, seed=i)] for i in range(12)]


def test_d4_moves_image_and_mask_together(discs: Path) -> None:
    rotated = samples(discs, rot90=True, vflip=True)
    for image, mask in rotated:
        np.testing.assert_array_equal((image[0] > 20000 / 65535).numpy(), (mask == 1).numpy())
    plain = samples(discs)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(rotated, plain))  # something did rotate


def test_elastic_deformation_keeps_the_mask_on_its_objects(discs: Path) -> None:
    for image, mask in samples(discs, elastic=True):
        scored = mask != 255
        agree = ((image[0] > 20000 / 65535) == (mask == 1))[scored].float().mean()
        assert float(agree) > 0.97  # bilinear image vs nearest mask differ only along edges


def test_a_negative_intensity_change_is_one_clear_error(discs: Path) -> None:
    with pytest.raises(SegkitError, match="data.gain/offset/gamma/noise: noise must be >= 0"):
        FolderDataModule(root=str(discs), num_classes=2, noise=-0.1)


def test_foreground_oversampling_puts_objects_in_that_share_of_crops() -> None:
    from segkit.data.augment import ForegroundCrop

    mask = torch.zeros(400, 400, dtype=torch.long)
    mask[300:303, 50:53] = 1  # one tiny object: a uniform 32-px crop holds it about 1 time in 130
    image = tv_tensors.Image(torch.rand(1, 400, 400))
    torch.manual_seed(0)
    with_object = [bool(ForegroundCrop(32, p=0.5)(image, tv_tensors.Mask(mask))[1].any()) for _ in range(400)]
    assert 0.42 < sum(with_object) / 400 < 0.6
    small = ForegroundCrop(32, p=1.0)(image[:, :20, :25], tv_tensors.Mask(mask[290:310, 40:65]))[1]
    assert small.shape == (32, 32) and int((small == 255).sum()) == 32 * 32 - 20 * 25 and bool(small.eq(1).any())
