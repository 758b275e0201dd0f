"""FCNModule: VGG16 initialisation, staged training, the reference recipe's parameter groups."""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision.models import VGG16_Weights, vgg16

from segkit.errors import SegkitError
from segkit.models import FCNModule
from segkit.nets import FCN32s
from segkit.nets.fcn_init import load_vgg16_backbone


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A full-size VGG16 state dict with random weights, saved like torchvision's file."""
    torch.manual_seed(0)
    state = vgg16().state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, state


def test_fc6_fc7_are_vgg16s_classifier_weights_reshaped(vgg16_file) -> None:  # type: ignore[no-untyped-def]
    path, state = vgg16_file
    net = FCN32s(num_classes=21)
    load_vgg16_backbone(net, str(path))
    assert torch.equal(net.fc[0].weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    assert torch.equal(net.fc[0].bias, state["classifier.0.bias"])
    assert torch.equal(net.fc[3].weight, state["classifier.3.weight"].view(4096, 4096, 1, 1))
    assert torch.equal(net.features[0].weight, state["features.0.weight"])
    assert torch.equal(net.features[28].weight, state["features.28.weight"])
    assert net.score_fr.weight.abs().sum() == 0  # the score layer stays zero


def test_imagenet_weights_offline_is_a_clear_error_naming_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(SegkitError, match=r"backbone_weights=/path/to/vgg16-397923af\.pth"):
        FCNModule(num_classes=3, arch="fcn32s", width_mult=1.0, backbone_weights="imagenet")


def test_bad_backbone_weights_are_clear_errors(tmp_path: Path, vgg16_file) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SegkitError, match="no such file"):
        FCNModule(num_classes=3, backbone_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(SegkitError, match="width_mult=1"):
        FCNModule(num_classes=3, width_mult=0.5, backbone_weights=str(vgg16_file[0]))


def test_staged_init_copies_every_matching_layer_and_keeps_new_score_layers_zero(tmp_path: Path) -> None:
    torch.manual_seed(0)
    coarse = FCNModule(num_classes=4, arch="fcn32s", width_mult=0.0625)
    with torch.no_grad():
        coarse.net.score_fr.weight.normal_()  # as if trained
    path = tmp_path / "fcn32s.ckpt"
    torch.save({"state_dict": coarse.state_dict()}, path)

    fine = FCNModule(num_classes=4, arch="fcn16s", width_mult=0.0625, init_from=str(path))
    assert torch.equal(fine.net.score_fr.weight, coarse.net.score_fr.weight)
    assert torch.equal(fine.net.fc[0].weight, coarse.net.fc[0].weight)
    assert torch.equal(fine.net.features[0].weight, coarse.net.features[0].weight)
    assert fine.net.score_pool4.weight.abs().sum() == 0
    assert "score_pool4.weight" not in fine.copied_from_init
    # With the pool4 skip still zero, FCN-16s starts out as FCN-32s does (up to upsampling).
    assert len(fine.copied_from_init) == len(coarse.net.state_dict()) - 1  # all but upscore


def test_reference_recipe_biases_at_twice_the_lr_without_weight_decay() -> None:
    module = FCNModule(
        num_classes=3, arch="fcn32s", width_mult=0.0625, bias_lr_mult=2.0, bias_weight_decay=0.0,
        loss={"name": "cross_entropy", "reduction": "sum"}, optimizer=functools.partial(torch.optim.SGD, lr=1e-10, momentum=0.99, weight_decay=5e-4),
    )
    weights, biases = module.configure_optimizers().param_groups
    assert (weights["lr"], weights["weight_decay"]) == (1e-10, 5e-4)
    assert (biases["lr"], biases["weight_decay"]) == (2e-10, 0.0)
    assert all(p.ndim == 1 for p in biases["params"]) and all(p.ndim > 1 for p in weights["params"])
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert len(weights["params"]) + len(biases["params"]) == len(trainable)


def test_reloaded_checkpoint_needs_no_arguments_and_no_backbone_file(tmp_path: Path, vgg16_file) -> None:  # type: ignore[no-untyped-def]
    import lightning as L

    module = FCNModule(num_classes=2, arch="fcn8s", width_mult=0.0625)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=0, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "fcn8s.ckpt"
    trainer.save_checkpoint(path)
    loaded = FCNModule.load_from_checkpoint(path, weights_only=True).eval()
    x = torch.randn(1, 3, 40, 30)
    with torch.no_grad():
        assert torch.equal(loaded(x), module.eval()(x))
    assert loaded.hparams["arch"] == "fcn8s" and "backbone_weights" not in loaded.hparams


def test_unknown_arch_is_a_clear_error() -> None:
    with pytest.raises(SegkitError, match="fcn32s, fcn16s, fcn8s, fcn8s_atonce"):
        FCNModule(num_classes=2, arch="fcn4s")


@pytest.mark.parametrize(("experiment", "lr"), [("fcn32s_voc", 1e-10), ("fcn16s_voc", 1e-12), ("fcn8s_voc", 1e-14)])
def test_voc_experiments_are_the_reference_recipe(experiment: str, lr: float, tmp_path: Path) -> None:
    from helpers import compose_config

    cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.data._target_ == "segkit.data.VOCDataModule" and cfg.data.batch_size == 1
    assert cfg.model.arch == experiment.removesuffix("_voc") and cfg.model.backbone_weights == "imagenet"
    assert cfg.model.loss.reduction == "sum" and cfg.model.dropout == 0.5
    optimizer = cfg.model.optimizer
    assert (optimizer._target_, optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (
        "torch.optim.SGD", lr, 0.99, 5e-4
    )
    assert (cfg.model.bias_lr_mult, cfg.model.bias_weight_decay) == (2.0, 0.0)
    # Normalisation matches the ImageNet weights.
    assert list(cfg.data.mean) == [0.485, 0.456, 0.406] and list(cfg.data.std) == [0.229, 0.224, 0.225]
    # Stages 2 and 3 start from the previous stage's checkpoint, which the user must give.
    assert ("model.init_from" in cfg.requires) == (experiment != "fcn32s_voc")


def test_a_staged_experiment_without_its_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from helpers import task_config

    from segkit.training.run import train

    cfg = task_config("train", ["experiment=fcn16s_voc"], tmp_path)
    with pytest.raises(SegkitError, match=r"model.init_from is not set.*FCN-32s checkpoint"):
        train(cfg)


def test_pretrained_weights_warn_when_the_data_uses_other_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.data import ShapesDataModule
    from segkit.models import fcn as fcn_module

    monkeypatch.setattr(fcn_module, "load_vgg16_backbone", lambda net, weights: None)
    module = FCNModule(num_classes=6, width_mult=0.0625, backbone_weights="imagenet")
    shapes = ShapesDataModule()
    assert "set data.mean and data.std" in fcn_module.normalization_mismatch(module.expected_normalization, shapes.spec())
    imagenet_shapes = ShapesDataModule(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert fcn_module.normalization_mismatch(module.expected_normalization, imagenet_shapes.spec()) is None
    # Random init expects nothing in particular.
    random_init = FCNModule(num_classes=6, width_mult=0.0625)
    assert fcn_module.normalization_mismatch(random_init.expected_normalization, shapes.spec()) is None

    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, fast_dev_run=1, enable_progress_bar=False,
                        enable_model_summary=False)
    data = ShapesDataModule(train_size=2, val_size=2, test_size=2, batch_size=2, image_size=16, num_workers=0)
    module = FCNModule(num_classes=6, width_mult=0.0625, backbone_weights="imagenet", data_spec=data.spec())
    with pytest.warns(UserWarning, match="backbone_weights expect inputs normalised"):
        trainer.fit(module, datamodule=data)
