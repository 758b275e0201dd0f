"""An exponential moving average (EMA) of the weights, through Lightning's weight averaging.

``callbacks=[default,ema]`` (``conf/callbacks/ema.yaml``) adds :class:`WeightEMA`, Lightning's
``EMAWeightAveraging`` (lightning >= 2.6) with three changes segkit needs:

- **The average is what a run yields.** Validation scores the averaged weights (so the best
  checkpoint is chosen by them); every checkpoint holds them as its ``state_dict``, which
  segkit-eval, -predict, -export and ``model.init_from`` read, and the raw weights as
  ``current_model_state``, from which a resumed run continues. Lightning's callback, asked to
  load a checkpoint outside fitting (``segkit-train`` testing its best checkpoint after fit),
  would swap the raw weights back in; here the averaged weights stay.
- **A warm-up of the decay**, as TensorFlow's ``ExponentialMovingAverage(num_updates=...)``:
  after n updates the decay is ``min(decay, (1 + n) / (10 + n))``, so in a short run the
  average is not dominated by the random initial weights (with 0.999 and no warm-up, 500 steps
  leave 61 % of the average at its starting point).
- **One fused update per dtype** (``torch._foreach_*``) with the decay kept on the device: no
  per-parameter Python loop; integer buffers (BatchNorm's step count) are copied.

Both counters of the callback are checkpointed, so a resumed run averages exactly as one never
stopped (tests/resume_matrix.py).

Example:
    >>> averaged, current = [torch.zeros(2)], [torch.ones(2)]
    >>> warmed_up_ema(0.999)(averaged, current, torch.tensor(2))  # decay (1 + 2) / (10 + 2) = 0.25
    >>> averaged[0].tolist()
    [0.75, 0.75]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from segkit.errors import SegkitError

try:
    from lightning.pytorch.callbacks import EMAWeightAveraging
except ImportError:  # lightning < 2.6
    EMAWeightAveraging = None  # type: ignore[assignment,misc]

Tensors = list[torch.Tensor]


def warmed_up_ema(decay: float, warmup: bool = True) -> Callable[[Tensors, Tensors, torch.Tensor], None]:
    """An ``AveragedModel`` ``multi_avg_fn``: ``averaged <- d * averaged + (1 - d) * current``,
    with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (``d = decay`` without warm-up)."""
    if not 0.0 <= decay <= 1.0:
        raise SegkitError(f"callbacks.ema.decay={decay}: a decay is in [0, 1]; 0.999 averages over about 1000 steps")

    @torch.no_grad()
    def update(averaged: Tensors, current: Tensors, num_averaged: torch.Tensor) -> None:
        if not (torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0])):
            torch._foreach_copy_(averaged, current)
            return
        kept = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay) if warmup else decay
        # A tensor weight keeps the decay on the device: no host sync per step.
        weight = (1 - kept).to(averaged[0].dtype) if isinstance(kept, torch.Tensor) else 1 - kept
        torch._foreach_lerp_(averaged, current, weight)

    return update


def _require_weight_averaging() -> None:
    if EMAWeightAveraging is None:
        raise SegkitError(
            f"callbacks.ema needs Lightning's EMAWeightAveraging (lightning >= 2.6; installed: {L.__version__}): "
            "pip install -U 'lightning>=2.6', or leave ema out of callbacks=[...]"
        )


# Without lightning >= 2.6 the class still imports (its configs and docs do), and says what to do when built.
_Base: Any = EMAWeightAveraging if EMAWeightAveraging is not None else L.Callback


class WeightEMA(_Base):
    """Lightning's ``EMAWeightAveraging`` with a decay warm-up, fused updates, and the averaged
    weights kept when a checkpoint is loaded outside fitting (module docstring).

    Args:
        decay: the average keeps ``decay`` of itself at each update (0.999: about the last
            1000 updates).
        warmup: ramp the decay up as ``(1 + n) / (10 + n)`` over the first updates.
        update_every_n_steps: update after every n-th optimiser step.
        update_starting_at_step: the first step (0-based) to average from; the average starts
            as a copy of the weights then.
        device: where the average lives (``cpu`` saves accelerator memory); None: the model's.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, update_every_n_steps: int = 1,
                 update_starting_at_step: int | None = None, device: str | None = None) -> None:
        _require_weight_averaging()
        average = warmed_up_ema(decay, warmup)  # checks the decay first, in segkit's words
        super().__init__(device=device, use_buffers=True, decay=decay, update_every_n_steps=update_every_n_steps,
                         update_starting_at_step=update_starting_at_step)
        # EMAWeightAveraging passes a per-parameter avg_fn; AveragedModel prefers multi_avg_fn
        # when avg_fn is None.
        self._kwargs["avg_fn"] = None
        self._kwargs["multi_avg_fn"] = average

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Outside fitting the checkpoint's state_dict, the averaged weights, is what is wanted.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
