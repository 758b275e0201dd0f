"""Exact resume, validation cadences: each setting killed at each kill point and run again
ends as the uninterrupted run does (the matrix and its checks: ``tests/resume_matrix.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_matrix import CADENCE, assert_resumes_exactly, cases, uninterrupted  # noqa: F401 (a fixture)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "point"), cases(CADENCE))
def test_a_run_killed_and_run_again_ends_as_if_never_stopped(
    name: str, point: str, tmp_path: Path, uninterrupted  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    assert_resumes_exactly(name, point, tmp_path, uninterrupted)
