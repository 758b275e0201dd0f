"""Naive sliding-window inference: cut the window around each pixel and classify it.

The reference :func:`segkit.nets.densify` must match exactly, and the baseline its speed-up
is measured against. Windows are cut from the same mirror-padded image, in batches.
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.geometry import mirror_pad, window_batch, window_padding


@torch.no_grad()
def naive_window_scores(
    net: nn.Module, image: torch.Tensor, window: int | None = None,
    pixels: torch.Tensor | None = None, batch_size: int = 256,
) -> torch.Tensor:
    """Scores of ``net`` on the window centred at each pixel of ``image`` ``(C, H, W)``.

    With ``pixels`` (an ``(n, 2)`` tensor of ``(row, col)``) only those: ``(n, K)``;
    otherwise every pixel: ``(K, H, W)``.

    Example:
        >>> from segkit.nets.patch_cnn import PatchCNN
        >>> net = PatchCNN(num_classes=2, in_channels=1, preset="n1").eval()
        >>> naive_window_scores(net, torch.randn(1, 5, 6)).shape
        torch.Size([2, 5, 6])
    """
    window = window if window is not None else net.window
    channels, height, width = image.shape
    before, after = window_padding(window)
    padded = mirror_pad(image[None], before, after, before, after)[0]
    if pixels is None:
        grid = torch.cartesian_prod(torch.arange(height), torch.arange(width))
    else:
        grid = pixels.long()
    grid = grid.to(image.device)
    scores = torch.cat([
        net(window_batch(padded, chunk[:, 0], chunk[:, 1], window)) for chunk in grid.split(batch_size)
    ])
    if pixels is not None:
        return scores
    return scores.T.reshape(-1, height, width)
