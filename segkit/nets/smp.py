"""A segmentation_models_pytorch (smp) architecture as a segkit net: any input size, and inputs
re-normalised to what the encoder's pretrained weights expect.

smp's models need a height and width divisible by the encoder's output stride (32) and expect
inputs normalised as the encoder was pretrained (ImageNet's mean and std, mostly). :class:`SMPNet`
pads to the stride and crops back, and first maps the data's normalisation to the encoder's with a
fixed per-channel affine (buffers, so checkpoints, eval, predict and export carry it).
``segmentation_models_pytorch`` is optional: ``pip install 'segkit[encoders]'``.

Example:
    >>> import torch
    >>> model = smp_package().create_model("unet", "tu-test_resnet", encoder_weights=None, in_channels=1, classes=2)
    >>> SMPNet(model, in_channels=1)(torch.randn(1, 1, 45, 37)).shape
    torch.Size([1, 2, 45, 37])
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import SegkitError

# Import names of the optional packages this module's examples need (tests skip them without).
REQUIRES_PACKAGES: tuple[str, ...] = ("segmentation_models_pytorch",)


def smp_package() -> ModuleType:
    """``segmentation_models_pytorch``, imported on first use (it imports timm: about 2 s), or a
    one-line error saying how to install it."""
    try:
        import segmentation_models_pytorch
    except ImportError as error:
        raise SegkitError(
            f"the smp models (model=smp_unet, smp_unetplusplus, smp_fpn) need segmentation_models_pytorch, "
            f"which is not installed ({error.name}): pip install 'segkit[encoders]'"
        ) from None
    return segmentation_models_pytorch


def channel_statistics(rgb: Sequence[float], in_channels: int) -> list[float]:
    """Per-channel statistics of RGB weights adapted to ``in_channels`` as smp adapts the first
    convolution: one channel sums the RGB filters (so it sees the mean of their statistics); more
    channels cycle them (channel ``i`` is RGB channel ``i % 3``).

    Example:
        >>> channel_statistics([0.485, 0.456, 0.406], 1), channel_statistics([1, 2, 3], 4)
        ([0.449], [1.0, 2.0, 3.0, 1.0])
    """
    if in_channels == 1:
        return [round(sum(rgb) / len(rgb), 6)]
    return [float(rgb[i % len(rgb)]) for i in range(in_channels)]


def renormalization(data_mean: Sequence[float], data_std: Sequence[float], encoder_mean: Sequence[float],
                    encoder_std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, each ``(1, C, 1, 1)``, with ``x * scale + shift`` turning an image
    normalised with the data's statistics into one normalised with the encoder's (both apply to
    pixels scaled to about [0, 1]): ``((x * s_d + m_d) - m_e) / s_e``.

    Example:
        >>> scale, shift = renormalization([0.5], [0.25], [0.5], [0.5])
        >>> scale.flatten().tolist(), shift.flatten().tolist()
        ([0.5], [0.0])
    """
    m_d, s_d, m_e, s_e = (torch.tensor([float(v) for v in values]).view(1, -1, 1, 1)
                          for values in (data_mean, data_std, encoder_mean, encoder_std))
    return s_d / s_e, (m_d - m_e) / s_e


class SMPNet(nn.Module):
    """An smp model taking any input size, its inputs first re-normalised for its encoder.

    Args:
        model: an smp ``SegmentationModel`` (``smp.create_model(...)``) returning logits.
        in_channels: image channels (the size of the re-normalisation buffers).
        scale, shift: ``(1, C, 1, 1)`` tensors of :func:`renormalization`; ``None``: identity
            (random weights, or inputs already normalised as the encoder expects).
    """

    def __init__(self, model: nn.Module, in_channels: int, scale: torch.Tensor | None = None,
                 shift: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.multiple = int(model.encoder.output_stride)
        # Persistent buffers: a reloaded checkpoint gets the statistics of its training data
        # even though it is rebuilt without them.
        self.register_buffer("input_scale", torch.ones(1, in_channels, 1, 1) if scale is None else scale.clone())
        self.register_buffer("input_shift", torch.zeros(1, in_channels, 1, 1) if shift is None else shift.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        m = self.multiple
        pad_h, pad_w = (m - height % m) % m, (m - width % m) % m
        # Always padded (by 0 too), so that a trace records the padding at every size; reflection
        # needs a pad smaller than the side, smaller inputs repeat their edge instead.
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(torch.addcmul(self.input_shift, x, self.input_scale), (0, pad_w, 0, pad_h), mode=mode)
        return self.model(x)[..., :height, :width]

    @property
    def encoder_frozen(self) -> bool:
        return bool(getattr(self.model, "_is_encoder_frozen", False))

    def freeze_encoder(self, frozen: bool) -> None:
        """Freeze (no gradients, norm statistics fixed) or unfreeze the encoder: smp's
        ``freeze_encoder`` / ``unfreeze_encoder``; nothing happens when it is so already."""
        if frozen != self.encoder_frozen:
            self.model.freeze_encoder() if frozen else self.model.unfreeze_encoder()

    def train(self, mode: bool = True) -> SMPNet:
        super().train(mode)
        if self.encoder_frozen:
            # smp leaves a frozen encoder's modules untouched by train()/eval(); only its norm
            # layers must stay in eval mode (fixed statistics): dropout and drop-path follow `mode`.
            for module in self.model.encoder.modules():
                is_norm = isinstance(module, nn.modules.batchnorm._NormBase)
                module.training = mode and not is_norm
        return self
