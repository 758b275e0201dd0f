"""VGG16 for FCN, and turning a classifier's fully connected layers into convolutions.

A Linear layer that reads a ``C x k x k`` feature map is exactly a ``k x k`` convolution with
``C`` input channels (weights reshaped, bias kept); a Linear after it is a ``1 x 1``
convolution. The converted classifier takes any image size and returns a map of class scores
(Long et al. 2015, section 3.1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# torchvision's VGG16 ("D") layout: channels per 3x3 conv, "M" = 2x2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
# Indices in vgg16_features() just after pool3, pool4 and pool5.
POOL3_END, POOL4_END, POOL5_END = 17, 24, 31


def scaled(channels: int, width_mult: float) -> int:
    """Channel count at a width multiplier (at least 1)."""
    return max(1, round(channels * width_mult))


def vgg16_features(in_channels: int = 3, width_mult: float = 1.0, fcn: bool = True) -> nn.Sequential:
    """VGG16's convolutional part, module for module as torchvision's ``vgg16().features``.

    With ``fcn`` (the FCN reference): conv1_1 has padding 100 and the max-pools round up
    (``ceil_mode``, as Caffe does), so every input size gives a pool5 map large enough for
    fc6 and the final crop. At ``width_mult=1`` the state dict keys and shapes equal
    torchvision's, so ImageNet weights load directly.

    Example:
        >>> vgg16_features(width_mult=0.125)(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 64, 8, 8])
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=fcn))
            continue
        out = scaled(int(item), width_mult)
        padding = 100 if fcn and not layers else 1
        layers += [nn.Conv2d(channels, out, 3, padding=padding), nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers)


def _last_conv_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("convolutionalize needs a model with a Conv2d feature extractor")
    return convs[-1].out_channels


def linear_to_conv(linear: nn.Linear, in_channels: int) -> nn.Conv2d:
    """The ``k x k`` convolution equal to ``linear`` on a ``in_channels x k x k`` input.

    Example:
        >>> conv = linear_to_conv(nn.Linear(8 * 3 * 3, 5), in_channels=8)
        >>> conv.kernel_size, conv.out_channels
        ((3, 3), 5)
    """
    area = linear.in_features // in_channels
    k = math.isqrt(area)
    if k * k * in_channels != linear.in_features:
        raise ValueError(
            f"Linear({linear.in_features}, {linear.out_features}) does not read a square "
            f"{in_channels} x k x k map; cannot convert it to a convolution"
        )
    conv = nn.Conv2d(in_channels, linear.out_features, k, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, k, k))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def convolutionalize(model: nn.Module) -> nn.Sequential:
    """A torchvision classifier with ``features`` and a Linear ``classifier`` (VGG, AlexNet)
    as a fully convolutional net: ``features`` followed by the classifier with every Linear
    turned into a convolution. Its adaptive pool is dropped, so on the classifier's native input
    (224 x 224) the output is the logits as a ``1 x 1`` map, and on a larger input a coarse
    score map (one score vector per 32-px step for VGG16).

    Example:
        >>> from torchvision.models import vgg16
        >>> classifier = vgg16(num_classes=10).eval()
        >>> fcn = convolutionalize(classifier).eval()
        >>> x = torch.randn(1, 3, 224, 224)
        >>> torch.allclose(fcn(x).flatten(1), classifier(x), atol=1e-5)
        True
        >>> fcn(torch.randn(1, 3, 320, 288)).shape
        torch.Size([1, 10, 4, 3])
    """
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Module) or not isinstance(classifier, nn.Module):
        raise ValueError(
            f"{type(model).__name__} has no `features` and `classifier`; convolutionalize "
            "takes torchvision-style classifiers such as vgg16() or alexnet()"
        )
    channels = _last_conv_channels(features)
    head: list[nn.Module] = []
    for layer in classifier.children() if isinstance(classifier, nn.Sequential) else [classifier]:
        if isinstance(layer, nn.Linear):
            conv = linear_to_conv(layer, channels)
            head.append(conv)
            channels = conv.out_channels
        else:
            # ReLU and Dropout act element-wise, so they carry over unchanged.
            head.append(layer)
    return nn.Sequential(features, *head)
