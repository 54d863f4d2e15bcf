"""The library stands on its own: the command line is a layer on top that it never imports."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "madeflow"
# The subprocesses import this checkout's package, whatever else is installed.
ENV = dict(
    os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])
)
HEAVY = ("matplotlib", "tqdm", "sklearn")  # plotting, progress bars, the digits' source
# Subpackages that exist to wrap an optional extra import it at load time; `import madeflow` never
# loads them (checked below), so the light core stays light.
EXTRA_SUBPACKAGES = {"sbi": {"sbi"}}  # madeflow/sbi wraps the `sbi` extra


def _is_cli(name: str) -> bool:
    return name == "madeflow.cli" or name.startswith("madeflow.cli.")


def test_import_madeflow_loads_no_command_line_no_plotting():
    code = (
        "import json, sys\n"
        "import torch, pyro  # what these load themselves is not madeflow's doing\n"
        "before = set(sys.modules)\n"
        "import madeflow, madeflow.data, madeflow.runs, madeflow.train\n"
        "new, everything = sorted(set(sys.modules) - before), sorted(sys.modules)\n"
        "print(json.dumps({'new': new, 'all': everything}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout)
    assert [m for m in modules["all"] if _is_cli(m)] == []
    assert [m for m in modules["new"] if m.split(".")[0] in HEAVY] == []
    extras = {pkg for pkgs in EXTRA_SUBPACKAGES.values() for pkg in pkgs}
    assert [m for m in modules["new"] if m.split(".")[0] in extras] == []
    wrappers = {f"madeflow.{sub}" for sub in EXTRA_SUBPACKAGES}
    assert [m for m in modules["new"] if m in wrappers or m.startswith(tuple(wrappers))] == []


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _library_modules() -> list[Path]:
    return [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "cli" not in p.relative_to(PACKAGE).parts[:1] and p.name != "__main__.py"
    ]


def test_no_library_module_imports_the_command_line():
    modules = _library_modules()
    assert len(modules) > 20
    for path in modules:
        found = [n for n in _imports(ast.parse(path.read_text())) if _is_cli(n)]
        assert found == [], (path, found)


def test_heavy_packages_are_imported_lazily_in_the_library():
    """Only inside the function that needs them, never when a library module is imported."""
    for path in _library_modules():
        top = [
            n
            for n in ast.parse(path.read_text()).body
            if isinstance(n, ast.Import | ast.ImportFrom)
        ]
        found = [
            n for n in _imports(ast.Module(body=top, type_ignores=[])) if n.split(".")[0] in HEAVY
        ]
        assert found == [], (path, found)


CORE = {"torch", "pyro", "numpy"}  # the light core's dependencies, as imported


def _third_party(names: list[str]) -> set[str]:
    tops = {n.split(".")[0] for n in names}
    return {n for n in tops if n not in sys.stdlib_module_names and n != "madeflow"}


def test_the_library_needs_only_torch_pyro_and_numpy():
    """Every package a library module imports at load time is a core dependency; the extras'
    packages (plots, digits, progress bars) are imported only inside the functions needing them,
    and the pyproject's dependencies are exactly the core."""
    loaded, anywhere = set(), set()
    for path in _library_modules():
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        wrapped = EXTRA_SUBPACKAGES.get(path.relative_to(PACKAGE).parts[0], set())
        loaded |= _third_party(_imports(ast.Module(body=top, type_ignores=[]))) - wrapped
        anywhere |= _third_party(_imports(tree)) - wrapped
    assert loaded == CORE
    assert anywhere - CORE <= set(HEAVY)
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    deps = text.split("\ndependencies = [", 1)[1].split("]", 1)[0]
    named = {d.strip().strip('"').split(">")[0].split("=")[0] for d in deps.split(",")}
    assert named == {"torch", "pyro-ppl", "numpy"}


def test_the_console_script_and_python_m_reach_the_command_line():
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'madeflow = "madeflow.cli:main"' in text
    proc = subprocess.run(
        [sys.executable, "-m", "madeflow", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert proc.returncode == 0 and "fit" in proc.stdout, proc.stderr
