"""The documentation's code runs as written: docs/python.md's blocks, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_code_to_run():
    assert len(python_blocks(ROOT / "docs" / "python.md")) >= 5


@pytest.mark.slow
def test_python_md_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the page writes models/quick relative to the working folder
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(python_blocks(ROOT / "docs" / "python.md")):
        exec(compile(block, f"docs/python.md block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    assert (tmp_path / "models" / "quick" / "bundle.json").is_file()
    assert namespace["seen"] >= 100_000
