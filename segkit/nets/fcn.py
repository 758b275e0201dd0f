"""FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once on VGG16 (Long, Shelhamer, Darrell 2015).

Faithful to the reference Caffe nets (shelhamer/fcn.berkeleyvision.org, voc-fcn*/net.py):
conv1_1 padding 100, ceil-mode pooling, fc6 (7x7 conv) / fc7 (1x1 conv) with dropout,
zero-initialised score layers, bias-free transposed convolutions initialised to bilinear
interpolation (class i -> class i only) and fixed by default, crop offsets 19 / (5, 27) /
(5, 9, 31), fusion by summation. Every input size gives logits of the input's H x W.
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.nets.vgg import POOL3_END, POOL4_END, scaled, vgg16_features


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """ConvTranspose2d weight ``(C, C, k, k)`` that upsamples each channel bilinearly.

    Off-diagonal blocks are zero: class ``i`` feeds class ``i`` only (as the reference's
    ``upsample_filt``).

    Example:
        >>> bilinear_kernel(1, 4)[0, 0, 0].tolist()
        [0.0625, 0.1875, 0.1875, 0.0625]
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=torch.float64)
    weight[range(channels), range(channels)] = torch.outer(taps, taps)
    return weight.float()


def bilinear_upsampling(channels: int, kernel_size: int, stride: int, learnable: bool) -> nn.ConvTranspose2d:
    """A bias-free transposed convolution initialised to bilinear upsampling."""
    up = nn.ConvTranspose2d(channels, channels, kernel_size, stride=stride, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, kernel_size))
    up.weight.requires_grad_(learnable)
    return up


def zero_conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 score layer initialised to zero (the reference's choice for every score layer)."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def he_init(*modules: nn.Module) -> None:
    """He-normal weights and zero biases for every Conv2d (torchvision's VGG init).

    PyTorch's default conv init shrinks activations layer by layer, so a randomly initialised
    15-conv VGG without batch norm barely trains; He init keeps their scale (He et al. 2015).
    """
    for module in modules:
        for conv in module.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(conv.bias)


def crop_like(x: torch.Tensor, offset: int, height: int, width: int) -> torch.Tensor:
    """``x[..., offset:offset + height, offset:offset + width]`` (Caffe's Crop layer)."""
    return x[..., offset : offset + height, offset : offset + width]


class FCN32s(nn.Module):
    """FCN-32s: VGG16 features, fc6/fc7 as convolutions, one 32x upsampling.

    Args:
        num_classes: output channels.
        in_channels: image channels.
        width_mult: scales every channel count (1.0 = the paper; 0.125 for CPU demos).
        learn_upsampling: learn the 2x upsamplings (the paper) instead of keeping every
            upsampling fixed (the reference code). The final upsampling is always fixed.
        dropout: fc6/fc7 dropout probability (0.5 in the paper).

    Example:
        >>> net = FCN32s(num_classes=21, width_mult=0.125)
        >>> net(torch.randn(1, 3, 97, 131)).shape
        torch.Size([1, 21, 97, 131])
    """

    final_offset = 19

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width_mult: float = 1.0,
        learn_upsampling: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.learn_upsampling = learn_upsampling
        self.features = vgg16_features(in_channels, width_mult, fcn=True)
        pool_channels = scaled(512, width_mult)
        fc_channels = scaled(4096, width_mult)
        self.fc = nn.Sequential(
            nn.Conv2d(pool_channels, fc_channels, 7),  # fc6: VGG16's first Linear, reshaped
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.score_fr = zero_conv1x1(fc_channels, num_classes)
        he_init(self.features, self.fc)
        self.build_head(width_mult)

    def build_head(self, width_mult: float) -> None:
        self.upscore = bilinear_upsampling(self.num_classes, 64, 32, learnable=False)

    def score(self, pool5: torch.Tensor) -> torch.Tensor:
        return self.score_fr(self.fc(pool5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        scores = self.score(self.features(x))
        return crop_like(self.upscore(scores), self.final_offset, height, width)


class FCN16s(FCN32s):
    """FCN-16s: FCN-32s plus a pool4 skip (score_pool4, 2x upsampling, sum, 16x upsampling).

    Example:
        >>> FCN16s(num_classes=5, width_mult=0.125)(torch.randn(1, 3, 64, 50)).shape
        torch.Size([1, 5, 64, 50])
    """

    pool4_offset, final_offset = 5, 27
    pool4_scale = 1.0

    def build_head(self, width_mult: float) -> None:
        self.score_pool4 = zero_conv1x1(scaled(512, width_mult), self.num_classes)
        self.upscore2 = bilinear_upsampling(self.num_classes, 4, 2, self.learn_upsampling)
        self.upscore16 = bilinear_upsampling(self.num_classes, 32, 16, learnable=False)

    def fuse_pool4(self, pool4: torch.Tensor, pool5: torch.Tensor) -> torch.Tensor:
        up = self.upscore2(self.score(pool5))
        skip = self.score_pool4(pool4 * self.pool4_scale if self.pool4_scale != 1.0 else pool4)
        return up + crop_like(skip, self.pool4_offset, up.shape[-2], up.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pool4 = self.features[:POOL4_END](x)
        fused = self.fuse_pool4(pool4, self.features[POOL4_END:](pool4))
        return crop_like(self.upscore16(fused), self.final_offset, height, width)


class FCN8s(FCN16s):
    """FCN-8s: FCN-16s plus a pool3 skip (score_pool3, 2x upsampling, sum, 8x upsampling).

    Example:
        >>> FCN8s(num_classes=5, width_mult=0.125)(torch.randn(1, 3, 1, 1)).shape
        torch.Size([1, 5, 1, 1])
    """

    pool4_offset, pool3_offset, final_offset = 5, 9, 31
    pool3_scale = 1.0

    def build_head(self, width_mult: float) -> None:
        self.score_pool4 = zero_conv1x1(scaled(512, width_mult), self.num_classes)
        self.score_pool3 = zero_conv1x1(scaled(256, width_mult), self.num_classes)
        self.upscore2 = bilinear_upsampling(self.num_classes, 4, 2, self.learn_upsampling)
        self.upscore_pool4 = bilinear_upsampling(self.num_classes, 4, 2, self.learn_upsampling)
        self.upscore8 = bilinear_upsampling(self.num_classes, 16, 8, learnable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pool3 = self.features[:POOL3_END](x)
        pool4 = self.features[POOL3_END:POOL4_END](pool3)
        up = self.upscore_pool4(self.fuse_pool4(pool4, self.features[POOL4_END:](pool4)))
        skip = self.score_pool3(pool3 * self.pool3_scale if self.pool3_scale != 1.0 else pool3)
        fused = up + crop_like(skip, self.pool3_offset, up.shape[-2], up.shape[-1])
        return crop_like(self.upscore8(fused), self.final_offset, height, width)


class FCN8sAtOnce(FCN8s):
    """FCN-8s trained in one stage: pool4 scaled by 0.01 and pool3 by 0.0001 before scoring
    (voc-fcn8s-atonce), so the skips start small next to the fc7 scores.

    Example:
        >>> FCN8sAtOnce(num_classes=3, width_mult=0.125)(torch.randn(1, 3, 40, 40)).shape
        torch.Size([1, 3, 40, 40])
    """

    pool4_scale = 0.01
    pool3_scale = 0.0001
