"""User mistakes that gave a traceback or a wrong value (issue 12): each is now one line, non-zero, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from augment.cli import cli


def one_line_error(r, code: int, *fragments: str) -> None:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 4  # click's usage lines + Error
    for fragment in fragments:
        assert fragment in r.output, (fragment, r.output)


@pytest.mark.parametrize("command", [
    ["train", "--data", "x.parquet", "--label", "y", "--out", "m"],
    ["demo"],
    ["split", "--data", "x.parquet", "--label", "y", "--out", "s"],
    ["evaluate", "--train", "a", "--test", "b", "--synthetic", "c", "--report", "r"],
    ["generate", "--model", "m", "--out", "o"],
])
def test_negative_seed_is_refused_by_every_command(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, [*command, "--seed", "-1"])
    one_line_error(r, 2, "--seed", "-1")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_demo_is_replaced_by_the_next(tmp_path, monkeypatch):
    """The marker was written last, so an interrupted demo left a folder the next demo refused."""
    import training.api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.api, "train", interrupted)
    out = tmp_path / "demo"
    CliRunner().invoke(cli, ["demo", "--out", str(out), "--quiet"])
    assert json.loads((out / "demo.json").read_text()) == {"complete": False}
    monkeypatch.undo()
    calls = []

    def stop_after_clearing(*args, **kwargs):  # the next demo gets past the folder check, then stops
        calls.append(out.exists() and sorted(p.name for p in out.iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(training.api, "train", stop_after_clearing)
    CliRunner().invoke(cli, ["demo", "--out", str(out), "--quiet"])
    assert calls == [["demo.json"]]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("x")
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "mine")])
    one_line_error(r, 1, "not a folder the demo wrote")


def test_sweep_sizes_are_checked_without_assert_even_under_python_O():
    code = ("from augment.evaluate.utility import parse_real_sizes\n"
            "for bad in ('0%', '101%', '0/class', '-3/class', 'x'):\n"
            "    try:\n        parse_real_sizes(bad)\n    except ValueError:\n        continue\n"
            "    raise SystemExit('accepted ' + bad)\n")
    r = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
