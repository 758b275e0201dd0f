"""segmentation_models_pytorch architectures (U-Net, U-Net++, FPN, ...) on pretrained encoders, as
a LightningModule: ``model=smp_unet``, ``smp_unetplusplus``, ``smp_fpn`` (``pip install 'segkit[encoders]'``).

Normalisation: the data module normalises images with its own ``data.mean`` / ``data.std`` (stored
in the checkpoint for eval, predict and export); with pretrained weights the net's first,
fixed layer maps them to the statistics the encoder was pretrained with (ImageNet's for most), so
the encoder sees what it expects in training, eval, predict and export alike, whatever the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from segkit.errors import SegkitError
from segkit.models.base import SegmentationModule
from segkit.nets.smp import REQUIRES_PACKAGES, SMPNet, channel_statistics, renormalization
from segkit.nets.smp_init import build_smp_model, encoder_statistics
from segkit.nets.traceable import Exportable


class SMPModule(SegmentationModule):
    """An smp architecture with an smp or timm encoder, trained with :class:`SegmentationModule`'s recipe.

    Args:
        arch: smp's architecture name (``smp.create_model``): ``unet``, ``unetplusplus``, ``fpn``, ...
        encoder_name: smp's encoder name (``resnet18``, ``efficientnet-b0``, ``tu-<timm model>``, ...).
        encoder_weights: ``None`` (random), a weights name (``imagenet``; ``ssl``, ``swsl``, ... where
            smp has them) downloaded by smp, or a local file, read with no download attempted
            (:mod:`segkit.nets.smp_init`). The first convolution adapts to ``in_channels``.
        freeze_encoder_steps: train the decoder alone (encoder weights and norm statistics fixed)
            for this many optimiser steps, then everything. Decided from ``global_step`` before
            each batch, so a resumed run freezes and unfreezes exactly as an uninterrupted one.
        arch_options: further arguments of smp's architecture (``decoder_channels``, ...).
        Others: see :class:`SegmentationModule`.

    Example:
        >>> module = SMPModule(num_classes=3, in_channels=1, encoder_name="tu-test_resnet")
        >>> module(torch.randn(1, 1, 45, 37)).shape
        torch.Size([1, 3, 45, 37])
    """

    # Weights come from the module's own checkpoint when it is reloaded: not downloaded again.
    not_hparams: ClassVar[tuple[str, ...]] = ("encoder_weights",)
    # timm's 0.4 M-parameter test ResNet keeps smp's decoders (and the padding) under test.
    contract_size: ClassVar[dict[str, Any]] = {"encoder_name": "tu-test_resnet", "encoder_weights": None}
    requires_packages: ClassVar[tuple[str, ...]] = REQUIRES_PACKAGES
    net: SMPNet
    #: What the pretrained encoder expects per input channel, ``{"mean", "std"}``; None: nothing.
    encoder_normalization: dict[str, list[float]] | None = None

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        arch: str = "unet",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        freeze_encoder_steps: int = 0,
        arch_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        if isinstance(freeze_encoder_steps, bool) or not isinstance(freeze_encoder_steps, int) or freeze_encoder_steps < 0:
            raise SegkitError(f"model.freeze_encoder_steps={freeze_encoder_steps}: use a whole number of "
                              "optimiser steps >= 0 (0: the encoder trains from the start)")
        weights = None if encoder_weights in (None, "none", "null") else str(encoder_weights)
        model = build_smp_model(arch, encoder_name, weights, in_channels, num_classes, arch_options)
        self.net = SMPNet(model, in_channels, *self._renormalization(encoder_statistics(encoder_name, weights), in_channels))
        self.freeze_encoder_steps = freeze_encoder_steps

    def _renormalization(self, rgb: tuple[list[float], list[float]] | None,
                         in_channels: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """From the data's statistics to the pretrained encoder's; identity for random weights or
        when the data's are unknown (inputs are then taken as normalised for the encoder)."""
        spec = self.data_spec
        if rgb is None or spec is None or spec.mean is None or spec.std is None:
            return None, None
        encoder_mean, encoder_std = (channel_statistics(values, in_channels) for values in rgb)
        self.encoder_normalization = {"mean": encoder_mean, "std": encoder_std}
        return renormalization(spec.mean, spec.std, encoder_mean, encoder_std)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = self.attached_trainer()
        ddp = getattr(trainer.strategy, "_ddp_kwargs", None) if trainer is not None else None
        if stage == "fit" and self.freeze_encoder_steps and ddp is not None and not ddp.get("find_unused_parameters"):
            # DDP expects a gradient for every parameter in every step, a frozen encoder's too.
            raise SegkitError(f"model.freeze_encoder_steps={self.freeze_encoder_steps} under DDP needs "
                              "trainer.strategy=ddp_find_unused_parameters_true (or model.freeze_encoder_steps=0)")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.freeze_encoder_steps:
            self.net.freeze_encoder(self.global_step < self.freeze_encoder_steps)

    def parameter_groups(self) -> list[nn.Parameter]:
        """Every parameter, a frozen encoder's too (it trains once unfrozen)."""
        return list(self.parameters())

    def exportable(self) -> Exportable:
        # The net pads and crops in tensor arithmetic; traced at a side of at least one stride
        # it reflects (smaller inputs need the eager net's edge padding).
        name = type(self.net.model).__name__
        return Exportable(self.net.eval(), self.net.multiple, f"smp {name} padded to a multiple of {self.net.multiple}")
