"""FCN-32s / 16s / 8s / 8s-at-once as a LightningModule, with the reference recipe's options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_warn

from segkit.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from segkit.data.spec import DataSpec
from segkit.errors import SegkitError
from segkit.models.base import SegmentationModule
from segkit.nets.fcn import FCN8s, FCN8sAtOnce, FCN16s, FCN32s
from segkit.nets.fcn_init import init_from_fcn, load_vgg16_backbone

ARCHITECTURES: dict[str, type[FCN32s]] = {
    "fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "fcn8s_atonce": FCN8sAtOnce,
}


class FCNModule(SegmentationModule):
    """An FCN (``arch`` = fcn32s, fcn16s, fcn8s or fcn8s_atonce) on VGG16.

    Args:
        arch: which FCN.
        width_mult: channel multiplier (1.0 = the paper).
        learn_upsampling: learn the 2x upsamplings (paper) or keep them bilinear (reference).
        backbone_weights: ``"imagenet"``, a path to a VGG16 state dict, or ``None`` (random).
        init_from: an FCN checkpoint (``.ckpt`` of this module, or a state dict) whose matching
            layers initialise this net: staged training 32s -> 16s -> 8s.
        bias_lr_mult, bias_weight_decay: the reference recipe trains biases at 2x the lr and
            without weight decay; 1.0 / None keep them like the weights.
        Others: see :class:`SegmentationModule`.

    Example:
        >>> module = FCNModule(num_classes=3, arch="fcn8s", width_mult=0.0625)
        >>> module(torch.randn(1, 3, 45, 37)).shape
        torch.Size([1, 3, 45, 37])
    """

    # Weights come from this module's own checkpoint when it is reloaded, so the
    # initialisation sources are not needed (nor downloaded) again.
    not_hparams: ClassVar[tuple[str, ...]] = ("backbone_weights", "init_from")
    contract_size: ClassVar[dict[str, Any]] = {"width_mult": 0.0625}

    def __init__(
        self,
        num_classes: int,
        arch: str = "fcn8s",
        in_channels: int = 3,
        width_mult: float = 1.0,
        learn_upsampling: bool = False,
        dropout: float = 0.5,
        backbone_weights: str | None = None,
        init_from: str | None = None,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        if arch not in ARCHITECTURES:
            raise SegkitError(f"model.arch={arch}: choose one of {', '.join(ARCHITECTURES)}")
        self.net = ARCHITECTURES[arch](num_classes, in_channels, width_mult, learn_upsampling, dropout)
        if backbone_weights not in (None, "none"):
            load_vgg16_backbone(self.net, backbone_weights)
        if init_from is not None:
            self.copied_from_init = init_from_fcn(self.net, _fcn_state_dict(init_from))
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay
        # VGG16 weights (torchvision's, or a local copy of them) expect ImageNet statistics.
        self.expected_normalization = (
            None if backbone_weights in (None, "none") else (IMAGENET_MEAN, IMAGENET_STD)
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        warning = normalization_mismatch(self.expected_normalization, self.data_spec)
        if warning:
            rank_zero_warn(warning)

    def parameter_groups(self) -> list[dict[str, Any]]:
        weights = [p for n, p in self.net.named_parameters() if p.requires_grad and not n.endswith("bias")]
        biases = [p for n, p in self.net.named_parameters() if p.requires_grad and n.endswith("bias")]
        group: dict[str, Any] = {"params": biases}
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if self.bias_lr_mult != 1.0:
            if base_lr is None:
                raise SegkitError("model.bias_lr_mult needs model.optimizer.lr to be set")
            group["lr"] = base_lr * self.bias_lr_mult
        if self.bias_weight_decay is not None:
            group["weight_decay"] = self.bias_weight_decay
        return [{"params": weights}, group]


def normalization_mismatch(expected: tuple[Sequence[float], Sequence[float]] | None,
                           spec: DataSpec | None) -> str | None:
    """A warning when pretrained weights meet inputs normalised with other statistics.

    Example:
        >>> from segkit.data import ShapesDataModule
        >>> normalization_mismatch((IMAGENET_MEAN, IMAGENET_STD), ShapesDataModule().spec())[:41]
        'backbone_weights expect inputs normalised'
    """
    mean, std = (spec.mean, spec.std) if spec is not None else (None, None)
    if expected is None or mean is None or std is None:
        return None
    if torch.allclose(torch.tensor(list(mean)), torch.tensor(expected[0]), atol=1e-3) and torch.allclose(
        torch.tensor(list(std)), torch.tensor(expected[1]), atol=1e-3
    ):
        return None
    return (
        f"backbone_weights expect inputs normalised with mean={list(expected[0])} std={list(expected[1])}, "
        f"the data module uses mean={list(mean)} std={list(std)}; set data.mean and data.std to match"
    )


def _fcn_state_dict(path: str) -> dict[str, torch.Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SegkitError(f"model.init_from={path}: no such file; pass the .ckpt of the previous FCN stage") from None
    state = checkpoint.get("state_dict", checkpoint)
    # A LightningModule checkpoint prefixes the net's keys with "net.".
    return {k.removeprefix("net."): v for k, v in state.items()}
