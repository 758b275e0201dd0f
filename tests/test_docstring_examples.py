"""Every runnable example in a public docstring runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES_WITH_EXAMPLES = [
    "segkit.benchmarks.fcn_latency",
    "segkit.benchmarks.throughput",
    "segkit.callbacks",
    "segkit.cli.argv",
    "segkit.cli.config_dir",
    "segkit.data.base",
    "segkit.data.shapes",
    "segkit.data.shapes_render",
    "segkit.data.transforms",
    "segkit.data.voc",
    "segkit.metrics",
    "segkit.models.fcn",
    "segkit.models.unet",
    "segkit.nets.fcn",
    "segkit.nets.fcn_init",
    "segkit.nets.unet",
    "segkit.nets.vgg",
    "segkit.palette",
]


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples left; drop it from the list"
    assert result.failed == 0
