"""U-Net exactly as in Ronneberger, Fischer, Brox (MICCAI 2015, Fig. 1 and Section 2).

Valid (unpadded) 3x3 convolutions, so every layer trims the border: a 572 x 572 tile gives a
388 x 388 map of logits, the segmentation of the tile's centre (92 px of context on each side).
2x2 max-pooling, 2x2 up-convolutions that halve the channels, the contracting path's maps
centre-cropped and concatenated, a final 1x1 convolution; 23 convolutions at depth 4.
Predicting a whole image is the overlap-tile strategy (:mod:`segkit.inference`).

Compare :class:`segkit.nets.UNet`, the practical same-padded variant.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segkit.errors import SegkitError
from segkit.geometry import nearest_valid_sizes, valid_output_size


def _double_valid_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3), nn.ReLU(inplace=True),
    )


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``height x width`` of ``(N, C, H, W)`` ("copy and crop" in Fig. 1)."""
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


class PaperUNet(nn.Module):
    """The paper's U-Net: valid convolutions, output smaller than input by ``2 * context``.

    Args:
        num_classes: output channels (the paper: 2).
        in_channels: input channels (the paper: 1, grayscale EM).
        depth: number of 2x2 max-poolings (the paper: 4).
        base_width: channels of the first level, doubled per level (the paper: 64 ... 1024).
        dropout: dropout at the end of the contracting path (Section 3.1; the paper does not
            give the rate, 0.5 is the common choice).

    Weights are drawn from a Gaussian with std sqrt(2/N), N = incoming nodes = k*k*C_in
    (Section 3); biases start at 0.

    Example:
        >>> net = PaperUNet(num_classes=2, in_channels=1)
        >>> sum(p.numel() for p in net.parameters())
        31030658
        >>> net = PaperUNet(num_classes=2, in_channels=1, base_width=4)
        >>> net(torch.zeros(1, 1, 572, 572)).shape, net.context
        (torch.Size([1, 2, 388, 388]), 92)
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 1, depth: int = 4, base_width: int = 64,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if depth < 1 or base_width < 1 or num_classes < 1:
            raise ValueError(f"PaperUNet needs depth, base_width, num_classes >= 1; got {depth}, {base_width}, {num_classes}")
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.downs = nn.ModuleList(
            _double_valid_conv(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(depth + 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up_convs = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                      for i in reversed(range(depth)))
        self.up_blocks = nn.ModuleList(_double_valid_conv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        #: Pixels of input each side of the output: (input - output) / 2, 92 at depth 4.
        self.context = (self.min_input_size - valid_output_size(self.min_input_size, depth)) // 2  # type: ignore[operator]
        self.reset_parameters()

    @property
    def min_input_size(self) -> int:
        """The smallest input side the valid convolutions take (188 at depth 4)."""
        return next(s for s in range(1, 10_000) if valid_output_size(s, self.depth))

    @property
    def size_multiple(self) -> int:
        """Valid input sides are ``min_input_size + k * size_multiple`` (16 at depth 4); tiles must
        start at multiples of it so that their pooling grids line up with the whole image's."""
        return 2**self.depth

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                # in_channels: the incoming channels for both (a transposed conv's weight is (C_in, C_out, k, k)).
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def check_input_size(self, height: int, width: int) -> None:
        """A one-line error naming the nearest valid sides when ``height x width`` does not fit."""
        for name, side in (("height", height), ("width", width)):
            if valid_output_size(side, self.depth) is None:
                below, above = nearest_valid_sizes(side, self.depth)
                nearest = f"{below} or {above}" if below else f"{above}"
                raise SegkitError(
                    f"input {name} {side} does not fit the valid-convolution U-Net (depth {self.depth}): "
                    f"use {nearest} (valid sides are {self.min_input_size} + 16k), or predict with "
                    "segkit.inference.overlap_tile, which pads any size"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(*x.shape[-2:])
        skips = []
        for level, block in enumerate(self.downs):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up_conv, block in zip(self.up_convs, self.up_blocks):
            x = up_conv(x)
            x = block(torch.cat([center_crop(skips.pop(), *x.shape[-2:]), x], dim=1))
        return self.head(x)
