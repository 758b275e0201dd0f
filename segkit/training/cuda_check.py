"""A CUDA availability check that does not try to load a library that is not there, every step.

Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so that asking whether CUDA is
available goes through NVML and does not initialise CUDA in a process that may fork later. torch's
optimisers ask on every ``step()`` (``Optimizer._accelerator_graph_capture_health_check``), and
with the variable set torch loads the NVML library (``ctypes.CDLL``) on each call until CUDA is
initialised. Where there is no NVML (a machine without an NVIDIA driver) the load fails every
time and torch falls back to the CUDA runtime's device count: what it asks without the variable.
That failed load costs 0.04 ms a call warm, 0.14 ms inside a training step (measured with py-spy
on a 2-core CPU, 2026-12-05), on every step, in any loop that imports Lightning.

:func:`skip_failing_nvml_check` removes the variable only where NVML cannot be loaded, so the
answer and its fork safety are what torch gives with it; where NVML is present it stays.
"""

from __future__ import annotations

import ctypes
import os

import torch

NVML_CHECK_VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"
# The name torch's own NVML check loads (torch.cuda._raw_device_count_nvml).
NVML_LIBRARY = "libnvidia-ml.so.1"


def nvml_loadable() -> bool:
    """Whether the NVML library torch's check uses can be loaded here."""
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def skip_failing_nvml_check() -> bool:
    """Unset ``PYTORCH_NVML_BASED_CUDA_CHECK`` if it is set and NVML cannot be loaded (torch's
    NVML check would fail and fall back on every call); return whether it did.

    Example:
        >>> os.environ[NVML_CHECK_VARIABLE] = "1"  # as importing Lightning does
        >>> skip_failing_nvml_check() == (not nvml_loadable() and torch.version.hip is None)
        True
    """
    # ROCm builds count devices with amdsmi, not NVML: leave their check as it is.
    if os.environ.get(NVML_CHECK_VARIABLE) != "1" or torch.version.hip is not None or nvml_loadable():
        return False
    del os.environ[NVML_CHECK_VARIABLE]
    return True
