"""Initialising FCNs: ImageNet VGG16 weights (or a local copy) and staged 32s -> 16s -> 8s."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segkit.errors import SegkitError
from segkit.nets.fcn import FCN32s

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1 file


def vgg16_state_dict(backbone_weights: str) -> dict[str, torch.Tensor]:
    """``"imagenet"`` (torchvision's weights API, downloads once) or a local state-dict path."""
    if backbone_weights == "imagenet":
        from torchvision.models import VGG16_Weights

        try:
            return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except OSError as error:  # URLError and socket errors are OSErrors
            raise SegkitError(
                f"backbone_weights=imagenet: cannot download torchvision's VGG16 weights ({error}); "
                f"fetch {VGG16_FILE} where there is a network and pass backbone_weights=/path/to/{VGG16_FILE}"
            ) from None
    path = Path(backbone_weights)
    if not path.is_file():
        raise SegkitError(
            f"backbone_weights={backbone_weights}: no such file; use imagenet, null, or a VGG16 "
            f"state dict such as torchvision's {VGG16_FILE}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_vgg16_backbone(net: FCN32s, backbone_weights: str) -> None:
    """Copy VGG16's conv weights into ``net.features`` and its first two Linear layers,
    reshaped, into fc6 (4096 x 512 x 7 x 7) and fc7 (4096 x 4096 x 1 x 1)."""
    state = vgg16_state_dict(backbone_weights)
    fc6, fc7 = net.fc[0], net.fc[3]
    targets: dict[str, torch.Tensor] = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    targets.update({"classifier.0.weight": fc6.weight, "classifier.0.bias": fc6.bias,
                    "classifier.3.weight": fc7.weight, "classifier.3.bias": fc7.bias})
    missing = [k for k in targets if k not in state]
    if missing:
        raise SegkitError(f"backbone_weights={backbone_weights}: not a VGG16 state dict (missing {missing[0]})")
    with torch.no_grad():
        for key, target in targets.items():
            source = state[key]
            if source.numel() != target.numel():
                raise SegkitError(
                    f"backbone_weights={backbone_weights}: {key} has {tuple(source.shape)}, the net needs "
                    f"{tuple(target.shape)}; VGG16 weights need width_mult=1 and in_channels=3"
                )
            target.copy_(source.reshape(target.shape))


def init_from_fcn(net: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``state`` whose name and shape match a tensor of ``net`` (staged
    training: FCN-16s from a trained FCN-32s, FCN-8s from FCN-16s); layers new to ``net`` keep
    their initialisation (zero for score layers, bilinear for upsamplings). Returns the copied
    names.

    Example:
        >>> from segkit.nets import FCN16s
        >>> coarse, fine = FCN32s(3, width_mult=0.0625), FCN16s(3, width_mult=0.0625)
        >>> copied = init_from_fcn(fine, coarse.state_dict())
        >>> "score_fr.weight" in copied, "score_pool4.weight" in copied
        (True, False)
    """
    own = net.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise SegkitError("init_from: the checkpoint shares no layer with this net; pass an FCN checkpoint of the same width and classes")
    net.load_state_dict(matching, strict=False)
    return sorted(matching)
