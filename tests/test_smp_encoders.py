"""model=smp_unet (and smp_unetplusplus, smp_fpn): encoder weights from a local file with no
download, any input channels, the encoder's input statistics, the offline and missing-package
errors, the frozen-encoder warm-up (and its exact resume), and the commands on a trained one."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import CPU, QUIET_CALLBACKS, TINY_DATA, TRAIN_CMD, assert_one_line_error, describe, run_cli, run_in_process
from PIL import Image

from segkit.data import ShapesDataModule
from segkit.data.spec import DataSpec
from segkit.errors import SegkitError
from segkit.models import SMPModule
from segkit.models.loading import load_module

smp = pytest.importorskip("segmentation_models_pytorch", reason="pip install 'segkit[encoders]'")
TESTS_DIR = str(Path(__file__).parent)
SHAPES = ShapesDataModule().spec()  # mean 0.5, std 0.25 on 3 channels
SHAPES_GREY = DataSpec.of(2, None, 1, mean=[0.5], std=[0.25])


WeightsFile = tuple[Path, dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> WeightsFile:
    """A randomly initialised smp resnet18 encoder's state dict, saved as an offline copy would be
    (and as safetensors beside it: smp-hub's format)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = smp.encoders.get_encoder("resnet18", weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    save_file(state, path.with_suffix(".safetensors"))
    return path, state


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way smp, timm and torch download refused and recorded."""
    import huggingface_hub
    import torch.hub
    import urllib.request

    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args)[:80])
        raise OSError("the test blocks the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(smp.encoders, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_local_file_is_loaded_and_nothing_is_downloaded(
    resnet18_file: WeightsFile, no_network: list[str], suffix: str
) -> None:
    path, state = resnet18_file
    module = SMPModule(num_classes=3, encoder_weights=str(path.with_suffix(suffix)), data_spec=SHAPES)
    loaded = module.net.model.encoder.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert not no_network
    # ImageNet's statistics (no config.json beside the file), reached from the data's 0.5 / 0.25.
    assert module.encoder_normalization == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    images = torch.rand(1, 3, 64, 64)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in module.encoder_normalization.values())
    with torch.no_grad():  # what the data gives in, what smp's model sees
        assert torch.allclose(module.eval()((images - 0.5) / 0.25), module.net.model((images - mean) / std), atol=1e-4)


@pytest.mark.parametrize("channels", [1, 4])
def test_other_channel_counts_adapt_the_first_convolution_as_smp_does(
    resnet18_file: WeightsFile, no_network: list[str], channels: int
) -> None:
    path, state = resnet18_file
    spec = DataSpec.of(2, None, channels, mean=[0.5] * channels, std=[0.25] * channels)
    module = SMPModule(num_classes=2, in_channels=channels, encoder_weights=str(path), data_spec=spec)
    reference = smp.encoders.get_encoder("resnet18", weights=None)
    reference.load_state_dict(state)
    reference.set_in_channels(channels, pretrained=True)  # what smp does to its downloaded weights
    loaded = module.net.model.encoder.state_dict()
    assert loaded["conv1.weight"].shape == (64, channels, 7, 7)
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    if channels == 1:  # summed RGB filters: the grey channel is normalised with the mean of the RGB statistics
        assert torch.allclose(loaded["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
        assert module.encoder_normalization == {"mean": [0.449], "std": [0.226]}
    assert module(torch.randn(2, channels, 40, 50)).shape == (2, 2, 40, 50)
    assert not no_network


def test_a_timm_encoders_file_and_statistics_come_through_timm(tmp_path: Path, no_network: list[str]) -> None:
    import timm

    state = timm.create_model("test_resnet").state_dict()
    torch.save(state, tmp_path / "test_resnet.pth")
    module = SMPModule(num_classes=2, in_channels=1, encoder_name="tu-test_resnet",
                       encoder_weights=str(tmp_path / "test_resnet.pth"), data_spec=SHAPES_GREY)
    loaded = module.net.model.encoder.model.state_dict()
    assert torch.allclose(loaded["conv1.0.weight"], state["conv1.0.weight"].sum(1, keepdim=True))
    assert torch.equal(loaded["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert module.encoder_normalization == {"mean": [0.5], "std": [0.5]}  # timm's config of test_resnet
    assert not no_network


def test_a_config_json_beside_the_file_gives_the_statistics(resnet18_file: WeightsFile, tmp_path: Path) -> None:
    (tmp_path / "model.pth").write_bytes(resnet18_file[0].read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}))
    module = SMPModule(num_classes=2, encoder_weights=str(tmp_path / "model.pth"), data_spec=SHAPES)
    assert module.encoder_normalization == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert torch.allclose(module.net.input_scale.flatten(), torch.full((3,), 0.5))  # 0.25 / 0.5


def test_imagenet_offline_is_one_line_naming_the_local_file_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fails at once, no retries
    with pytest.raises(SegkitError) as error:
        SMPModule(num_classes=2, encoder_weights="imagenet")
    message = str(error.value)
    assert "\n" not in message and "model.encoder_weights=/path/to/model.safetensors" in message
    assert "https://huggingface.co/smp-hub/resnet18.imagenet" in message


def test_segkit_train_offline_with_imagenet_stops_before_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    from segkit.cli.train import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = run_in_process(main, ["model=smp_unet", "model.encoder_weights=imagenet", *TINY_DATA, *QUIET_CALLBACKS],
                            tmp_path)
    assert_one_line_error(result, "model.encoder_weights=/path/to/model.safetensors")
    assert not list(tmp_path.rglob("*.ckpt"))


def test_bad_values_are_one_line_errors(tmp_path: Path, resnet18_file: WeightsFile) -> None:
    torch.save({**resnet18_file[1], "conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    torch.save(smp.encoders.get_encoder("resnet34", weights=None).state_dict(), tmp_path / "resnet34.pth")
    cases = {
        "no such file": {"encoder_weights": str(tmp_path / "missing.pth")},
        "resnet18 has the weights imagenet, ssl, swsl": {"encoder_weights": "imagenet21k"},
        "model.encoder_name=resnet7: not an smp encoder": {"encoder_name": "resnet7"},
        "(layer1.2.conv1.weight: not in the encoder, and ": {"encoder_weights": str(tmp_path / "resnet34.pth")},
        "model.arch=unet3: not an smp architecture": {"arch": "unet3"},
        "not the resnet18 encoder's weights (conv1.weight: (1,)": {"encoder_weights": str(tmp_path / "other.pth")},
        "model.arch_options.decoder_channels: not an argument of smp's fpn": {
            "arch": "fpn", "arch_options": {"decoder_channels": [8]}},
        "model.freeze_encoder_steps=-1": {"freeze_encoder_steps": -1},
    }
    for expected, arguments in cases.items():
        with pytest.raises(SegkitError) as error:
            SMPModule(num_classes=2, **arguments)
        assert expected in str(error.value) and "\n" not in str(error.value)


def test_without_smp_the_error_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # as if not installed
    with pytest.raises(SegkitError, match=r"pip install 'segkit\[encoders\]'") as error:
        SMPModule(num_classes=2)
    assert "\n" not in str(error.value)


class EncoderSnapshots(L.Callback):
    """The encoder's and decoder's tensors (weights and norm statistics) before each step."""

    def __init__(self) -> None:
        self.encoder: dict[int, dict[str, torch.Tensor]] = {}
        self.decoder: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int) -> None:
        model = pl_module.net.model
        self.encoder[trainer.global_step] = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        self.decoder[trainer.global_step] = {k: v.clone() for k, v in model.decoder.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_encoder_stays_frozen_for_its_steps_then_trains(resnet18_file: WeightsFile) -> None:
    data = ShapesDataModule(train_size=8, val_size=2, test_size=2, image_size=32, batch_size=2, num_workers=0)
    module = SMPModule(num_classes=6, encoder_weights=str(resnet18_file[0]), freeze_encoder_steps=2, data_spec=data.spec())
    snapshots = EncoderSnapshots()
    # Validation after every step: eval() and train() in between must keep the frozen norm layers fixed.
    trainer = L.Trainer(accelerator="cpu", max_steps=4, val_check_interval=1, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[snapshots])
    trainer.fit(module, datamodule=data)
    encoder, decoder = snapshots.encoder, snapshots.decoder
    assert _same(encoder[0], encoder[1]) and _same(encoder[0], encoder[2])  # 2 steps frozen
    assert not _same(decoder[0], decoder[2])  # while the decoder learnt
    assert not _same(encoder[2], encoder[3])  # the 3rd step trained the encoder
    assert all(p.requires_grad for p in module.parameters())


def test_a_frozen_warm_up_under_ddp_asks_for_unused_parameter_detection() -> None:
    module = SMPModule(num_classes=2, encoder_name="tu-test_resnet", freeze_encoder_steps=5)
    module.trainer = L.Trainer(accelerator="cpu", devices=1, strategy="ddp", logger=False)
    with pytest.raises(SegkitError, match="needs trainer.strategy=ddp_find_unused_parameters_true"):
        module.setup("fit")
    module.trainer = L.Trainer(accelerator="cpu", devices=1, strategy="ddp_find_unused_parameters_true", logger=False)
    module.setup("fit")


RESUME_RUN = [*TINY_DATA, *QUIET_CALLBACKS, *CPU, "model=smp_unet", "model.encoder_name=tu-test_resnet",
              "model.freeze_encoder_steps=3", "trainer.max_epochs=2", "test=false"]


def test_a_run_killed_before_the_unfreeze_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    def train(run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli(TRAIN_CMD, [*RESUME_RUN, f"hydra.run.dir={run_dir}", *extra], tmp_path, PYTHONPATH=TESTS_DIR)

    proc = train(tmp_path / "uninterrupted")
    assert proc.returncode == 0, describe(proc)
    kill = ["callbacks.model_checkpoint.last_every_n_train_steps=1", "+callbacks.kill._target_=helpers.KillAtStep",
            "+callbacks.kill.step=2", f"+callbacks.kill.once={tmp_path}"]
    proc = train(tmp_path / "killed", *kill)
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    proc = train(tmp_path / "killed", *kill)  # the same command resumes at step 2, unfreezes at 3
    assert proc.returncode == 0, describe(proc)
    assert re.search(r"resuming from \S+ \(step 2\)", proc.stdout + proc.stderr), describe(proc)
    expected, resumed = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
                         for run in ("uninterrupted", "killed"))
    assert expected["global_step"] == resumed["global_step"] == 8
    differing = [k for k in expected["state_dict"] if not torch.equal(expected["state_dict"][k], resumed["state_dict"][k])]
    assert not differing, f"weights differ after resuming: {differing[:5]}"


def test_segkit_train_predict_and_export_on_a_pretrained_encoder(resnet18_file: WeightsFile, tmp_path: Path) -> None:
    from segkit.cli.export import main as export_main
    from segkit.cli.predict import main as predict_main

    run_dir = tmp_path / "run"
    proc = run_cli(TRAIN_CMD, [*TINY_DATA, *QUIET_CALLBACKS, *CPU, "model=smp_unet", "trainer.max_steps=2",
                               f"model.encoder_weights={resnet18_file[0]}", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    module = load_module(str(ckpt)).eval()
    assert not torch.equal(module.net.input_scale, torch.ones_like(module.net.input_scale))  # kept from training

    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    result = run_in_process(predict_main, [f"ckpt_path={ckpt}", f"input={tmp_path / 'images'}", "inference.mode=whole",
                                           f"output={tmp_path / 'masks'}", "progress_bar=false"], tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    normalised = (torch.from_numpy(image).float().div(255).permute(2, 0, 1)[None] - 0.5) / 0.25  # the data's statistics
    with torch.no_grad():
        expected = module(normalised).argmax(1)[0].numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "a.png")), expected)

    fmt, file = ("onnx", "model.onnx") if _installed("onnx") and _installed("onnxruntime") else ("torchscript", "model.pt")  # segkit[export]
    export = [f"ckpt_path={ckpt}", f"format={fmt}", f"output={tmp_path / 'export' / file}"]
    result = run_in_process(export_main, export, tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    description = json.loads((tmp_path / "export" / "model.json").read_text())
    # The file holds the re-normalisation: callers feed images normalised with the data's statistics.
    assert (description["mean"], description["std"]) == ([0.5] * 3, [0.25] * 3)
    assert all(diff < 1e-3 for diff in description["max_abs_diff"].values())


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
