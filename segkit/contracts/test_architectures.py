"""The contract every architecture keeps, for each model config (``model/*.yaml``) of segkit
and of installed plugins: ``pytest --pyargs segkit.contracts -k <model>``.

An architecture added as the README says (a net, a ``SegmentationModule`` subclass, a yaml, in
segkit or in a plugin package) is picked up here with no edit: it is built from its own config,
shrunk by its class's ``contract_size``, and must
- keep the input's height and width at odd sizes,
- send gradients to every trainable parameter,
- train a step without reading from the device (no host-device sync),
- reload from a checkpoint with ``weights_only=True`` and no arguments, computing the same,
- export to ONNX that computes what PyTorch does at a size the trace never saw,
- train, validate and test through ``segkit-train`` (fast_dev_run) in bf16-mixed precision.

A model whose class lists optional packages (``requires_packages``) that are not installed is skipped.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import get_class, instantiate

from segkit.contracts.configs import QUIET_CALLBACKS, TINY_SHAPES, compose_config, config_options, task_config
from segkit.contracts.probes import RecordNetOutputDtypes
from segkit.inference.export import export_onnx, exportable, onnx_runner
from segkit.models.base import SegmentationModule
from segkit.models.loading import load_module
from segkit.training.run import train

MODELS = config_options("model")
NUM_CLASSES, IN_CHANNELS = 3, 2  # two channels: neither the RGB nor the grey default


def model_class(name: str) -> type[SegmentationModule]:
    return get_class(compose_config("train", [f"model={name}"]).model._target_)


@pytest.fixture(autouse=True)
def skip_without_optional_packages(request: pytest.FixtureRequest) -> None:
    """A model whose optional packages are missing (its class's ``requires_packages``) is skipped."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "model" in callspec.params:
        for package in model_class(callspec.params["model"]).requires_packages:
            pytest.importorskip(package, reason=f"model={callspec.params['model']} needs {package}")


def build(name: str) -> SegmentationModule:
    """The model as its config builds it, at its contract size, with no all-zero parameter
    (FCN's score layers start at zero, and zero logits would match anything)."""
    cfg = compose_config("train", [f"model={name}"]).model
    module = instantiate(
        cfg, _convert_="all", num_classes=NUM_CLASSES, in_channels=IN_CHANNELS,
        class_names=["bg", "a", "b"], ignore_index=255, **model_class(name).contract_size,
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.any():
                parameter.normal_(std=0.1)
    return module


def contract_overrides(name: str) -> list[str]:
    """``model.KEY=VALUE`` overrides giving the contract size on the command line."""
    return [f"model.{key}={'null' if value is None else value}" for key, value in model_class(name).contract_size.items()]


@pytest.mark.parametrize("model", MODELS)
def test_the_model_config_names_a_segmentation_module(model: str) -> None:
    assert issubclass(model_class(model), SegmentationModule)


@pytest.mark.parametrize("model", MODELS)
def test_logits_keep_odd_input_sizes(model: str) -> None:
    module = build(model).eval()
    with torch.no_grad():
        logits = module(torch.randn(2, IN_CHANNELS, 37, 53))
    assert logits.shape == (2, NUM_CLASSES, 37, 53)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("model", MODELS)
def test_gradients_reach_every_trainable_parameter(model: str) -> None:
    module = build(model).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, IN_CHANNELS, 40, 44, generator=generator)
    masks = torch.randint(0, NUM_CLASSES, (2, 40, 44), generator=generator)
    logits, targets = module.training_logits((images, masks))
    module.loss(logits, targets).backward()
    trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    assert trainable
    unreached = [name for name, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unreached, f"no gradient reaches {unreached}"


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no Trainer here
@pytest.mark.parametrize("model", MODELS)
def test_a_training_step_reads_nothing_back_from_the_device(model: str) -> None:
    """On PyTorch's meta device (shapes, no data) every op whose result needs the data on the
    host raises: ``.item()``, ``if tensor``, ``torch.bincount``, boolean indexing. Each is a
    host-device sync on a GPU, and a training step must not wait for one every step."""
    module = build(model).train()
    if module.training_step_host_read is not None:
        pytest.skip(f"model={model} reads from the device on purpose: {module.training_step_host_read}")
    module.to("meta")
    module.configure_model()
    images = torch.randn(2, IN_CHANNELS, 40, 44, device="meta")
    masks = torch.zeros(2, 40, 44, dtype=torch.long, device="meta")
    loss = module.training_step((images, masks), 0)
    assert loss.device.type == "meta" and loss.shape == ()


@pytest.mark.parametrize("model", MODELS)
def test_a_checkpoint_reloads_with_weights_only_and_no_arguments(model: str, tmp_path: Path) -> None:
    module = build(model).eval()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    reloaded = load_module(str(tmp_path / "model.ckpt")).eval()  # torch.load(weights_only=True) inside
    assert type(reloaded) is type(module)
    assert dict(reloaded.hparams) == dict(module.hparams)
    state, restored = module.state_dict(), reloaded.state_dict()
    assert state.keys() == restored.keys()
    assert all(torch.equal(state[key], restored[key]) for key in state)
    images = torch.randn(1, IN_CHANNELS, 41, 35)
    with torch.no_grad():
        assert torch.equal(module(images), reloaded(images))


@pytest.mark.parametrize("model", MODELS)
def test_onnx_export_computes_what_pytorch_computes_at_an_unseen_size(model: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")  # the optional extra segkit[export]
    pytest.importorskip("onnxruntime")
    module = build(model).eval()
    target = exportable(module)
    side = max(48, target.min_side)
    export_onnx(target.net, torch.randn(1, IN_CHANNELS, side, side), tmp_path / "model.onnx", opset=17)
    run = onnx_runner(tmp_path / "model.onnx")
    assert run is not None
    images = torch.randn(2, IN_CHANNELS, side + 13, side + 30)  # neither the traced size nor square
    with torch.no_grad():
        expected = module(images).numpy()
    got = run(images.numpy())
    assert got.shape == expected.shape == (2, NUM_CLASSES, side + 13, side + 30)
    assert abs(expected).max() > 1e-3, "logits too small to tell a wrong export apart"
    assert abs(got - expected).max() < 1e-4 * max(1.0, abs(expected).max())


@pytest.mark.parametrize("model", MODELS)
def test_a_bf16_mixed_fast_dev_run_trains_validates_and_tests(model: str, tmp_path: Path) -> None:
    overrides = [
        "debug=fdr", f"model={model}", *contract_overrides(model), *TINY_SHAPES, *QUIET_CALLBACKS,
        "trainer.precision=bf16-mixed", "~logger", "callbacks.lr_monitor=null",
        "+callbacks.dtypes._target_=segkit.contracts.probes.RecordNetOutputDtypes",
    ]
    RecordNetOutputDtypes.seen.clear()
    metrics = train(task_config("train", overrides, tmp_path))
    assert torch.bfloat16 in RecordNetOutputDtypes.seen  # autocast really ran the net in bf16
    for stage in ("train", "val", "test"):
        assert math.isfinite(metrics[f"{stage}/loss"]), stage
