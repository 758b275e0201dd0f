"""The data-module contract (:mod:`segkit.contracts.test_data_modules`), run on every data config
segkit ships; ``pytest --pyargs segkit.contracts`` runs it on plugins' too."""

from __future__ import annotations

from segkit.contracts.test_data_modules import *  # noqa: F403 (pytest collects the contract's tests here)
from segkit.contracts.test_data_modules import DATA


def test_segkit_ships_a_data_module_for_each_kind_of_data() -> None:
    assert {"shapes", "em", "folder", "isbi2012", "voc", "patches"} <= set(DATA)
