"""The package layout: no import cycles, `import augment` loads nothing heavy, missing extras are one line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "augment") -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports, at module level or inside functions (both count:
    a function-level import that dodges a cycle is still a cycle in the design)."""
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import augment.batch.plan` -> the module it names
                    t = t.rpartition(".")[0]
                if t and t != name and t != package:  # the root package re-exports lazily (module __getattr__)
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_of_augment_imports_one_that_imports_it_back():
    graph = import_graph("augment")
    assert "augment.batch.run" in graph and "augment.batch.plan" in graph["augment.batch.run"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_import_augment_loads_nothing_heavy():
    out = _python("import sys, augment\n"
                  "print(sorted(m for m in ('torch', 'ray', 'sklearn', 'matplotlib', 'fastapi', 'pandas', 'onnxruntime')"
                  " if m in sys.modules))\n"
                  "print(augment.Synthesizer.__module__)")
    assert out.split("\n")[:2] == ["[]", "augment.api"]


def test_report_figures_leave_the_matplotlib_backend_alone():
    out = _python("import matplotlib\nmatplotlib.use('svg')\n"
                  "from augment.evaluate import figures\n"
                  "fig = figures.column_scores_figure({'score': 0.9, 'columns': {'a': {'score': 0.9, 'kind': 'numeric'}}})\n"
                  "import io\nfig.savefig(io.BytesIO(), format='png')\n"
                  "import matplotlib.pyplot as plt\n"
                  "print(matplotlib.get_backend(), len(plt.get_fignums()))")
    assert out.strip() == "svg 0"  # the notebook's backend is kept and pyplot holds no figure of ours


@pytest.mark.parametrize("command, extra, module", [
    (["train", "--data", "x.parquet", "--out", "m"], "train", "torch"),
    (["serve", "--model", "m"], "serve", "fastapi"),
    (["evaluate", "--train", "a", "--test", "b", "--synthetic", "c", "--report", "r"], "evaluate", "sklearn"),
])
def test_a_command_whose_extra_is_missing_names_it_in_one_line(monkeypatch, capsys, command, extra, module):
    import importlib.util

    from augment.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.count("\n") == 1 and f"pip install 'augment[{extra}]'" in err and "Traceback" not in err
