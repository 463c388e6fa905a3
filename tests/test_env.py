"""python -m hptransfer.env: torchvision is removed only when it cannot load (a working one, a GPU user's, stays)."""

from __future__ import annotations

import subprocess

import pytest

from hptransfer import env


@pytest.fixture
def fake_torchvision(tmp_path, monkeypatch):
    def install(body: str) -> None:
        package = tmp_path / "torchvision"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(body)
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return install


@pytest.mark.parametrize("body, loads", [
    ("raise RuntimeError('operator torchvision::nms does not exist')", False),
    ("__version__ = '0.0'", True),
], ids=["broken", "working"])
def test_only_a_torchvision_that_cannot_load_is_removed(fake_torchvision, monkeypatch, body, loads):
    fake_torchvision(body)
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    ok, what = env.torchvision_loads()
    assert ok is loads
    assert env.main() == 0
    if loads:
        assert calls == []  # the working one is left alone
    else:
        assert "nms does not exist" in what
        assert len(calls) == 1 and calls[0][-4:] == ["uninstall", "-y", "-q", "torchvision"]
