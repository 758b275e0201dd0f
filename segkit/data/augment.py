"""Microscopy augmentation for training crops: the intensity changes torchvision lacks.

torchvision.transforms.v2 has the geometric steps (flips; ``RandomRot90`` and the U-Net paper's
``ElasticDeformation`` live in ``em_transforms``) and a fixed-sigma ``GaussianNoise`` that clips
to [0, 1]. 16-bit images scaled by percentiles run a little past 1, and microscopy wants a random
gamma, a random noise level and a per-crop gain and offset, so those are written here, acting on
the float image in about [0, 1] before normalisation, never on the mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class RandomIntensity(v2.Transform):
    """Per-crop gain, offset, gamma and Gaussian noise of a float image in about [0, 1].

    With ``x`` the image: ``x <- (1 + a) * x + b`` with ``a ~ U(-scale, scale)`` and
    ``b ~ U(-shift, shift)``; then ``x <- max(x, 0) ** exp(g)`` with ``g ~ U(-gamma, gamma)``
    (a symmetric change of gamma in log space; values below 0 become 0 only when a gamma is drawn);
    then ``x <- x + N(0, s)`` per pixel with ``s ~ U(0, noise)``. Each part is applied with
    probability ``p``; a 0 switches that part off. Masks pass through unchanged.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> image = tv_tensors.Image(torch.full((1, 8, 8), 0.5))
        >>> out = RandomIntensity(scale=0.2, shift=0.1, gamma=0.3, noise=0.05, p=1.0)(image)
        >>> tuple(out.shape), bool((out != image).any()), type(out).__name__
        ((1, 8, 8), True, 'Image')
    """

    def __init__(self, scale: float = 0.0, shift: float = 0.0, gamma: float = 0.0, noise: float = 0.0,
                 p: float = 0.5) -> None:
        super().__init__()
        for name, value in {"scale": scale, "shift": shift, "gamma": gamma, "noise": noise}.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.scale, self.shift, self.gamma, self.noise, self.p = scale, shift, gamma, noise, p

    def _draw(self, width: float) -> float:
        """U(-width, width) with probability p, else 0 (no draw at all when width is 0)."""
        if width == 0 or float(torch.rand(())) >= self.p:
            return 0.0
        return float(torch.empty(()).uniform_(-width, width))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        noise = abs(self._draw(self.noise))
        return {"gain": 1.0 + self._draw(self.scale), "offset": self._draw(self.shift),
                "gamma": float(torch.tensor(self._draw(self.gamma)).exp()), "noise": noise}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        if not inpt.is_floating_point():
            raise TypeError("RandomIntensity needs a float image: put it after ToDtype(float32, scale=True)")
        x = inpt.as_subclass(torch.Tensor)
        if params["gain"] != 1.0 or params["offset"] != 0.0:
            x = x * params["gain"] + params["offset"]
        if params["gamma"] != 1.0:
            x = x.clamp(min=0.0).pow(params["gamma"])
        if params["noise"] > 0:
            x = x + torch.randn_like(x) * params["noise"]
        return tv_tensors.wrap(x, like=inpt)


class ForegroundCrop(v2.Transform):
    """A random ``size`` crop that, with probability ``p``, contains a random foreground pixel
    (a mask value other than background 0 and ``ignore_index``) at a random place in the crop:
    sparse objects are then seen in about ``p`` of the crops (nnU-Net samples a third of its
    patches so). Otherwise, or when the mask has no foreground, a uniform random crop. Smaller
    inputs are padded first (image 0, mask ``ignore_index``), as ``v2.RandomCrop(pad_if_needed=True)``.

    Example:
        >>> mask = torch.zeros(100, 100, dtype=torch.long); mask[90, 5] = 1
        >>> crop = ForegroundCrop(16, p=1.0)
        >>> _, out = crop(tv_tensors.Image(torch.rand(1, 100, 100)), tv_tensors.Mask(mask))
        >>> tuple(out.shape), int(out.sum())
        ((16, 16), 1)
    """

    def __init__(self, size: int, p: float = 0.33, ignore_index: int = 255) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.size, self.p, self.ignore_index = size, p, ignore_index

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        pad_h, pad_w = max(self.size - height, 0), max(self.size - width, 0)
        height, width = height + pad_h, width + pad_w
        top = int(torch.randint(height - self.size + 1, ()))
        left = int(torch.randint(width - self.size + 1, ()))
        masks = [item for item in flat_inputs if isinstance(item, tv_tensors.Mask)]
        if masks and float(torch.rand(())) < self.p:
            mask = masks[0]
            found = ((mask != 0) & (mask != self.ignore_index)).nonzero()
            if len(found):
                y, x = (int(v) for v in found[int(torch.randint(len(found), ()))][-2:])
                y, x = y + pad_h // 2, x + pad_w // 2
                # The pixel at a random place of the crop, the crop inside the (padded) image.
                top = min(max(y - int(torch.randint(self.size, ())), 0), height - self.size)
                left = min(max(x - int(torch.randint(self.size, ())), 0), width - self.size)
        return {"pad": (pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2), "top": top, "left": left}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        if any(params["pad"]):
            fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else 0
            inpt = v2.functional.pad(inpt, list(params["pad"]), fill=fill)
        return v2.functional.crop(inpt, params["top"], params["left"], self.size, self.size)
