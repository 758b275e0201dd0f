"""The paper's valid-convolution U-Net as a LightningModule, predicting by overlap-tile."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from segkit.errors import SegkitError
from segkit.geometry import smallest_valid_output, valid_output_size
from segkit.inference.tiling import overlap_tile
from segkit.models.base import SegmentationModule
from segkit.nets.traceable import Exportable, WholeImageValidUNet
from segkit.nets.unet_paper import PaperUNet


class UNetPaperModule(SegmentationModule):
    """:class:`segkit.nets.PaperUNet` on images of any size, with mirrored border context.

    Training images (crops of any size) go through the net in one pass over the image padded by
    the net's context (92 px at depth 4) with mirrored pixels, so the logits cover exactly the
    crop and its label (the paper's training tiles: a 572 input for a 388 label). Validation,
    test and prediction use overlap-tile (:func:`segkit.inference.overlap_tile`) with output
    tiles of ``tile`` pixels (``None``: one pass over the whole padded image).

    Example:
        >>> module = UNetPaperModule(num_classes=2, in_channels=1, depth=2, base_width=4, tile=36)
        >>> module.eval()(torch.randn(1, 1, 50, 77)).shape
        torch.Size([1, 2, 50, 77])
    """

    contract_size: ClassVar[dict[str, Any]] = {"base_width": 4, "depth": 2, "tile": None}

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        depth: int = 4,
        base_width: int = 64,
        dropout: float = 0.5,
        tile: int | None = 388,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.net = PaperUNet(num_classes, in_channels, depth, base_width, dropout)
        self.tile = tile
        if tile is not None:
            self._check_tile(tile)

    def _check_tile(self, tile: int) -> None:
        if valid_output_size(tile + 2 * self.net.context, self.net.depth) != tile:
            raise SegkitError(
                f"model.tile={tile}: the net cannot take {tile + 2 * self.net.context}-px inputs; "
                f"use model.tile={smallest_valid_output(tile, self.net.context, self.net.depth)} (or null for one pass)"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return overlap_tile(self.net, images, tile=None if self.training else self.tile)

    def exportable(self) -> Exportable:
        return Exportable(
            WholeImageValidUNet(self.net).eval(), self.net.context + self.net.size_multiple,
            "valid-convolution U-Net in one pass over the mirror-padded image (overlap-tile with one tile)",
        )
