"""U-Net (Ronneberger et al. 2015) in its practical, same-padded form.

The paper's network uses valid (unpadded) convolutions, so its output is smaller than its
input. This version pads every 3x3 convolution, optionally adds batch norm, and pads the input
to a multiple of ``2**depth`` internally, so any H x W goes in and logits of the same H x W
come out. The paper-faithful valid-convolution form lives beside it in a later module.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Upsampling = Literal["transpose", "bilinear"]


class DoubleConv(nn.Sequential):
    """Two (3x3 conv -> [batch norm] -> ReLU) blocks, spatial size preserved."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A conv followed by batch norm needs no bias: BN's shift replaces it.
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UpBlock(nn.Module):
    """Upsample x2, concatenate the skip feature map, then a DoubleConv."""

    def __init__(
        self, in_channels: int, out_channels: int, upsampling: Upsampling, batch_norm: bool
    ) -> None:
        super().__init__()
        if upsampling == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        elif upsampling == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        else:
            raise ValueError(
                f"unknown upsampling={upsampling!r}; choose 'transpose' or 'bilinear'"
            )
        self.conv = DoubleConv(2 * out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Same-padded U-Net: any input size in, per-pixel logits of the same size out.

    Args:
        num_classes: output channels (one logit per class).
        in_channels: input image channels.
        depth: number of 2x2 max-pool steps (the paper uses 4).
        base_width: channels of the first level; level ``i`` has ``base_width * 2**i``
            (the paper uses 64).
        batch_norm: batch norm after every convolution (not in the paper; trains faster).
        upsampling: ``"transpose"`` (2x2 up-convolution, as in the paper) or ``"bilinear"``
            (bilinear resize + 1x1 conv, cheaper and free of checkerboard artefacts).
        dropout: dropout probability at the end of the contracting path (paper: 0.5).

    Example:
        >>> net = UNet(num_classes=3, in_channels=1, depth=3, base_width=8)
        >>> net(torch.randn(2, 1, 97, 131)).shape
        torch.Size([2, 3, 97, 131])
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 4,
        base_width: int = 64,
        batch_norm: bool = True,
        upsampling: Upsampling = "transpose",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1 or base_width < 1 or num_classes < 1:
            raise ValueError(
                f"UNet needs depth >= 1, base_width >= 1, num_classes >= 1; "
                f"got depth={depth}, base_width={base_width}, num_classes={num_classes}"
            )
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.inc = DoubleConv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(
            DoubleConv(widths[i], widths[i + 1], batch_norm) for i in range(depth)
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], upsampling, batch_norm)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            # Reflect where the image is large enough; tiny inputs fall back to zeros.
            mode = "reflect" if pad_h < height and pad_w < width else "constant"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = self.dropout(skips.pop())
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)[..., :height, :width]
