"""Frames listeners have a compiled steady-state path (replay/_speedups.c) and the Python path it
stands in for; tests that use the ``frames_path`` fixture run on both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import proxy.net.frames as frames_mode


@pytest.fixture(params=["compiled", "python"])
def frames_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(frames_mode, "_speedups", None)
    elif frames_mode._speedups is None:
        pytest.skip("replay._speedups is not built")
    yield request.param
