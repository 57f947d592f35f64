"""How `edge` starts itself again: `python -m edge` from a venv, `python ARCHIVE` from the artifact."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from edge.cli._self import edge_argv


def test_from_a_venv_it_runs_the_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "edge"
    script.write_text("#!/usr/bin/env python3\nfrom edge.cli import main\nmain()\n")
    monkeypatch.setattr(sys, "argv", [str(script), "node"])
    assert edge_argv() == [sys.executable, "-m", "edge"]


def test_from_the_artifact_it_runs_the_archive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "edge.pyz", "w") as archive:
        archive.writestr("__main__.py", "")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["edge.pyz", "node"])
    assert edge_argv() == [sys.executable, str(tmp_path / "edge.pyz")]
