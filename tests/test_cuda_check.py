"""The per-step CUDA check: without NVML, an optimiser step must not try to load it."""

from __future__ import annotations

import pytest
import torch

from segkit.training import cuda_check
from segkit.training.cuda_check import NVML_CHECK_VARIABLE, skip_failing_nvml_check


class CountNvmlLoads:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return -1  # as torch's own does where the library is missing


def optimiser_steps(count: int) -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimiser = torch.optim.AdamW([weight], lr=0.1)
    for _ in range(count):
        weight.sum().backward()
        optimiser.step()


@pytest.mark.skipif(torch.cuda.is_initialized(), reason="torch caches the device count once CUDA is initialised")
def test_without_nvml_optimiser_steps_stop_trying_to_load_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")  # as importing Lightning does
    monkeypatch.setattr(cuda_check, "nvml_loadable", lambda: False)
    loads = CountNvmlLoads()
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", loads)
    available = torch.cuda.is_available()
    optimiser_steps(3)
    assert loads.calls >= 3  # one failed load per step: the cost removed

    assert skip_failing_nvml_check()
    loads.calls = 0
    optimiser_steps(3)
    assert loads.calls == 0
    assert torch.cuda.is_available() == available


def test_the_nvml_check_is_kept_where_nvml_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NVML_CHECK_VARIABLE, "1")
    monkeypatch.setattr(cuda_check, "nvml_loadable", lambda: True)
    assert not skip_failing_nvml_check()
    assert cuda_check.os.environ[NVML_CHECK_VARIABLE] == "1"


def test_an_unset_check_stays_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NVML_CHECK_VARIABLE, raising=False)
    monkeypatch.setattr(cuda_check, "nvml_loadable", lambda: False)
    assert not skip_failing_nvml_check()
    assert NVML_CHECK_VARIABLE not in cuda_check.os.environ
