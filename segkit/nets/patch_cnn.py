"""The sliding-window pixel classifier of Ciresan et al. (NIPS 2012): N4 and 65-px variants.

Each net takes a batch of ``w x w`` windows and returns class scores for their centre pixels.
Layers are a plain ``nn.Sequential`` of Conv2d / MaxPool2d / activation / Flatten / Linear,
which is what :func:`segkit.nets.densify` turns into an exact dense per-pixel net.
"""

from __future__ import annotations

import torch
from torch import nn

# Per preset: window size and (conv kernel, pool) stages with 48 maps each; then FC 200, FC C.
# N4 is Ciresan's table (95: 4-pool-5-pool-4-pool-4-pool, 48x3x3 into FC 200). n1/n3 use a
# 65-px window in the spirit of N1-N3 (their exact tables differ in details the paper's
# text leaves open): three and four conv/pool stages, every pooling dividing exactly.
PRESETS: dict[str, tuple[int, tuple[int, ...]]] = {
    "n1": (65, (4, 4, 3)),
    "n3": (65, (4, 4, 3, 3)),
    "n4": (95, (4, 5, 4, 4)),
}
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class PatchCNN(nn.Sequential):
    """A window classifier: conv/max-pool stages, then two fully connected layers.

    Args:
        num_classes: output scores per window (2 = membrane / not in the paper).
        in_channels: image channels.
        preset: ``n4`` (95 px, the paper's table; 219,290 parameters at 1 channel, 2
            classes), ``n1`` or ``n3`` (65 px).
        maps: feature maps per conv (48 in the paper); ``hidden``: the first FC's width (200).
        activation: ``tanh`` (the paper's scaled-tanh family) or ``relu``.

    Example:
        >>> net = PatchCNN(num_classes=2, in_channels=1, preset="n4")
        >>> net.window, sum(p.numel() for p in net.parameters())
        (95, 219290)
        >>> net(torch.randn(8, 1, 95, 95)).shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        preset: str = "n4",
        maps: int = 48,
        hidden: int = 200,
        activation: str = "tanh",
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r}: choose one of {', '.join(PRESETS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        window, kernels = PRESETS[preset]
        layers: list[nn.Module] = []
        channels, size = in_channels, window
        for kernel in kernels:
            layers += [nn.Conv2d(channels, maps, kernel), ACTIVATIONS[activation](), nn.MaxPool2d(2)]
            channels, size = maps, (size - kernel + 1) // 2
        layers += [nn.Flatten(), nn.Linear(channels * size * size, hidden), ACTIVATIONS[activation](),
                   nn.Linear(hidden, num_classes)]
        super().__init__(*layers)
        self.window = window
        self.num_classes = num_classes
        self.in_channels = in_channels


def macs_per_window(net: nn.Sequential, window: int, in_channels: int) -> int:
    """Multiply-accumulates of one window through the Conv2d and Linear layers of ``net``.

    Example:
        >>> macs_per_window(PatchCNN(preset="n4"), 95, 1) // 10**6
        121
    """
    total = 0
    x = torch.zeros(1, in_channels, window, window)
    for layer in net:
        y = layer(x)
        if isinstance(layer, nn.Conv2d):
            total += y.numel() * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] // layer.groups
        elif isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features
        x = y
    return total

