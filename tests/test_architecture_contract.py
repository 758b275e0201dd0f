"""The architecture contract (:mod:`segkit.contracts.test_architectures`), run on every model
config segkit ships; ``pytest --pyargs segkit.contracts`` runs it on plugins' too."""

from __future__ import annotations

from segkit.contracts.test_architectures import *  # noqa: F403 (pytest collects the contract's tests here)
from segkit.contracts.test_architectures import MODELS


def test_segkit_ships_the_papers_architectures() -> None:
    assert {"unet", "unet_paper", "fcn32s", "fcn16s", "fcn8s", "patch_cnn"} <= set(MODELS)
