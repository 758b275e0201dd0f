"""Training speed options: ``model.channels_last`` and ``+model.compile=true`` compute the
same function as the plain module, and train through ``segkit-train``. Their speed on this CPU is
measured by ``segkit-bench throughput`` (docs/overhead.md), not here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY, task_config

from segkit.models import UNetModule


def _pair(**options: bool) -> tuple[UNetModule, UNetModule]:
    torch.manual_seed(0)
    plain = UNetModule(num_classes=3, depth=2, base_width=4)
    fast = UNetModule(num_classes=3, depth=2, base_width=4, **options)
    fast.load_state_dict(plain.state_dict())
    fast.configure_model()
    return plain.eval(), fast.eval()


def test_channels_last_computes_the_same_logits_and_gradients_at_odd_sizes() -> None:
    plain, fast = _pair(channels_last=True)
    assert fast.net.inc[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 37, 50)
    expected, got = plain(images), fast(images)
    assert torch.allclose(got, expected, atol=1e-5)
    expected.square().mean().backward()
    got.square().mean().backward()
    grads = zip(plain.net.parameters(), fast.net.parameters())
    assert all(torch.allclose(a.grad, b.grad, atol=1e-5) for a, b in grads)


def test_speed_options_are_not_stored_with_the_weights() -> None:
    # A checkpoint's module is rebuilt without them (eval, predict, export run the plain net).
    _, fast = _pair(channels_last=True)
    assert "channels_last" not in fast.hparams and "compile" not in fast.hparams
    assert list(fast.state_dict()) == list(UNetModule(num_classes=3, depth=2, base_width=4).state_dict())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compile_computes_the_same_logits_and_keeps_the_checkpoint_keys() -> None:
    plain, fast = _pair(compile=True)
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(fast(images), plain(images), atol=1e-4)
    assert list(fast.state_dict()) == list(plain.state_dict())


def test_segkit_train_runs_with_channels_last_the_unet_default(tmp_path: Path) -> None:
    from segkit.training.run import train

    cfg = task_config("train", [*TINY, "test=false"], tmp_path)
    assert cfg.model.channels_last is True  # conf/model/unet.yaml: measured faster on CPU
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
