"""Every runnable example in a public docstring runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES_WITH_EXAMPLES = [
    "segkit.benchmarks.dense_patch",
    "segkit.benchmarks.fcn_latency",
    "segkit.benchmarks.throughput",
    "segkit.data.em",
    "segkit.data.em_render",
    "segkit.data.isbi",
    "segkit.data.em_transforms",
    "segkit.losses",
    "segkit.em_metrics",
    "segkit.nets.unet_paper",
    "segkit.models.unet_paper",
    "segkit.inference.tiling",
    "segkit.export",
    "segkit.cli.export",
    "segkit.data.folder",
    "segkit.inference.predict",
    "segkit.callbacks",
    "segkit.checkpointing",
    "segkit.cli.argv",
    "segkit.cli.config_dir",
    "segkit.data.base",
    "segkit.data.sampling",
    "segkit.data.shapes",
    "segkit.data.shapes_render",
    "segkit.data.transforms",
    "segkit.data.voc",
    "segkit.data.windows",
    "segkit.metrics",
    "segkit.models.fcn",
    "segkit.models.patch_cnn",
    "segkit.models.unet",
    "segkit.nets.fcn",
    "segkit.nets.densify",
    "segkit.nets.fcn_init",
    "segkit.nets.patch_cnn",
    "segkit.nets.unet",
    "segkit.nets.vgg",
    "segkit.nets.window_scan",
    "segkit.palette",
]


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples left; drop it from the list"
    assert result.failed == 0
