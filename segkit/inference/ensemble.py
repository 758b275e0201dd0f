"""An ensemble of segmentation models as one model: the mean of their softmax probabilities.

:class:`Ensemble` returns ``log(mean_m softmax(logits_m))``. Those are valid logits: whatever
applies a softmax or an argmax downstream gets the mean probability itself (``softmax(log p) = p``
when ``p`` sums to 1). A one-model ensemble is that model wherever logits are averaged (windows,
views): ``log softmax(z)`` differs from ``z`` by one value per pixel, which a softmax or an argmax ignores.

Where the averaging happens, per window of the sliding-window engine:

1. each model's logits are averaged over its test-time augmentation views (as for one model);
2. softmax per model, then the mean over the models (nnU-Net's ensembling of folds);
3. windows that overlap (``inference.mode=slide``) are blended as one model's logits are, here
   the ensemble's log-probabilities. Whole images (``segkit-eval``, ``inference.mode=whole``) and
   the non-overlapping tiles of ``inference.mode=tile`` get exactly the mean of the probabilities
   each model gives alone.

The models may expect differently normalised inputs (fold models with statistics of their own):
the input stacks one ``C``-channel image per distinct :class:`Normalization` along the channels,
and each model reads its own (:attr:`Ensemble.slots`). ``segkit-predict`` makes them from the raw
pixels (:func:`segkit.inference.predict.predict_bands`); ``segkit-eval`` converts its data's
(:class:`segkit.models.ensemble.EnsembleModule`).

Example:
    >>> _ = torch.manual_seed(0)
    >>> a, b = torch.nn.Conv2d(1, 3, 1), torch.nn.Conv2d(1, 3, 1)
    >>> x = torch.randn(2, 1, 5, 7)
    >>> with torch.no_grad():
    ...     mean = (a(x).softmax(1) + b(x).softmax(1)) / 2
    ...     same = torch.allclose(Ensemble([a, b])(x).softmax(1), mean, atol=1e-6)
    >>> same
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from segkit.data.files.intensity import IntensityScaling
from segkit.inference.tta import TestTimeAugmentation

__all__ = ["Ensemble", "Normalization", "valid_geometry"]


@dataclass(frozen=True)
class Normalization:
    """How raw pixels become a model's input: ``intensity`` (to about [0, 1]), then
    ``(x - mean) / std`` per channel, as the model's training data did."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    intensity: IntensityScaling = field(default_factory=IntensityScaling)

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float], intensity: IntensityScaling | None = None) -> Normalization:
        """From lists (as checkpoints and configs hold them)."""
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std), intensity or IntensityScaling())


def valid_geometry(net: object) -> tuple[int, int] | None:
    """``(context, depth)`` of a valid-convolution net (:class:`segkit.nets.PaperUNet`), ``None``
    for a net whose logits have its input's size."""
    context = getattr(net, "context", None)
    return None if context is None else (int(context), int(getattr(net, "depth")))


class Ensemble(nn.Module):
    """The mean softmax probability of ``members``, as log-probabilities ``(N, K, H, W)`` float32.

    Args:
        members: modules mapping ``(N, C, H, W)`` inputs to ``(N, K, H, W)`` logits, all with the
            same ``K`` classes; or valid-convolution nets of one ``(context, depth)``, whose
            logits are ``2 * context`` smaller (the ensemble then has their ``context``/``depth``).
        normalizations: the input each member expects (``None``: the input as given); members
            expecting the same one share a slot of the stacked input.
    """

    def __init__(self, members: Sequence[nn.Module], normalizations: Sequence[Normalization | None] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        expected = list(normalizations) if normalizations is not None else [None] * len(members)
        if len(expected) != len(members):
            raise ValueError(f"{len(members)} members but {len(expected)} normalizations")
        self.members = nn.ModuleList(members)
        #: The distinct inputs, in the order they are stacked; member ``i`` reads ``slots[i]``.
        self.normalizations: tuple[Normalization | None, ...] = tuple(dict.fromkeys(expected))
        self.slots: tuple[int, ...] = tuple(self.normalizations.index(n) for n in expected)
        geometries = {valid_geometry(member) for member in members}
        if len(geometries) > 1:
            raise ValueError(f"members of different geometries {sorted(map(str, geometries))}: ensemble their modules")
        geometry = geometries.pop()
        if geometry is not None:
            self.context, self.depth = geometry

    def forward(self, inputs: torch.Tensor, tta: TestTimeAugmentation | None = None) -> torch.Tensor:
        """``log`` of the members' mean softmax of ``inputs`` ``(N, S * C, H, W)`` (slot ``s``:
        channels ``s * C`` to ``(s + 1) * C``); ``tta`` averages each member's logits over its
        views before its softmax."""
        if inputs.shape[1] % len(self.normalizations):
            raise ValueError(f"{inputs.shape[1]} input channels for {len(self.normalizations)} stacked inputs")
        channels = inputs.shape[1] // len(self.normalizations)
        total: torch.Tensor | None = None
        for member, slot in zip(self.members, self.slots):
            x = inputs[:, slot * channels:(slot + 1) * channels]
            logits = member(x) if tta is None or tta.is_identity else tta(member, x)
            probabilities = logits.float().softmax(dim=1)
            total = probabilities if total is None else total + probabilities
        assert total is not None
        # Clamped: log(0) = -inf would turn into NaN where views are resized or windows weighted.
        return (total / len(self.members)).clamp_min(torch.finfo(torch.float32).tiny).log()
