"""Every Python block in README.md and docs/*.md runs as written, page by page.

The blocks of one page run in order in one namespace (a reader goes down the page), in a fresh
process whose working folder is an empty temporary one, with ``MADEFLOW_DOCS_QUICK=1`` (the
documented switch that shrinks the long trainings to a couple of epochs). Tracebacks name the
page and its line. A block whose imports name a package that is not installed (an optional
extra) skips the rest of its page, with the reason, and so does a page that fails only because
the library imported such a package (scikit-learn for the digits, without the ``cli`` extra).
A block that is deliberately not run is marked by the line just above its fence, which must say
why::

    <!-- not run: REASON -->

``python -m pytest tests/test_docs_examples.py -rA`` prints each page's time.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGE_TIMEOUT = 240  # seconds a page's examples may take on a busy 2-core machine
MAX_NOT_RUN = 3  # "not run" marks are for the rare block that cannot run here; keep them rare

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.*?)\s*-->$")

RUNNER = """
import json, sys
ns = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1], encoding="utf-8")):
    code = compile("\\n" * (block["line"] - 1) + block["source"], block["page"], "exec")
    exec(code, ns)
"""


def python_blocks(page: Path, root: Path = ROOT) -> list[dict]:
    """The page's fenced ``python`` blocks: source, first line (1-based) and not-run reason."""
    blocks, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info, start = match["fence"], match["info"].strip(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if info.split()[:1] not in (["python"], ["py"]):
            continue
        above = lines[start - 1].strip() if start > 0 else ""
        mark = NOT_RUN.match(above)
        blocks.append(
            {
                "page": str(page.relative_to(root)),
                "line": start + 2,
                "source": "\n".join(body) + "\n",
                "not_run": mark["reason"] if mark else None,
            }
        )
    return blocks


def missing_imports(source: str) -> list[str]:
    """Top-level packages the block imports that are not installed (madeflow itself excluded)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if n != "madeflow" and importlib.util.find_spec(n) is None)


def missing_at_run_time(stderr: str) -> list[str]:
    """Packages a failed run could not import that are indeed not installed."""
    names = {n.split(".")[0] for n in re.findall(r"No module named '([\w.]+)'", stderr)}
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


def test_pages_are_found():
    names = {p.name for p in PAGES}
    assert {"README.md", "getting-started.md", "tutorials.md"} <= names
    assert sum(len(python_blocks(p)) for p in PAGES) >= 10


def test_not_run_marks_are_rare_and_say_why():
    marked = [b for p in PAGES for b in python_blocks(p) if b["not_run"] is not None]
    assert all(b["not_run"] for b in marked), "a not-run mark must give its reason"
    assert len(marked) <= MAX_NOT_RUN, [f"{b['page']}:{b['line']}" for b in marked]


def test_block_parser_reads_marks_and_lines(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- not run: needs a cluster -->\n```python\n"
        "y = 2\n```\n\n```bash\nls\n```\n\n````py\nz = 3\n````\n",
        encoding="utf-8",
    )
    blocks = python_blocks(page, root=tmp_path)
    assert [(b["line"], b["source"], b["not_run"]) for b in blocks] == [
        (4, "x = 1\n", None),
        (9, "y = 2\n", "needs a cluster"),
        (17, "z = 3\n", None),
    ]


def test_missing_packages_at_run_time_are_found():
    err = "ModuleNotFoundError: No module named 'no_such_pkg_xyz.sub'\n\nImportError: x"
    assert missing_at_run_time(err) == ["no_such_pkg_xyz"]
    assert missing_at_run_time("ModuleNotFoundError: No module named 'torch'") == []


def test_missing_imports_are_found():
    assert missing_imports("import torch\nfrom madeflow import MAF\n") == []
    assert missing_imports("import no_such_pkg_xyz.sub\nimport torch\n") == ["no_such_pkg_xyz"]


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


RUNNABLE = [p for p in PAGES if any(b["not_run"] is None for b in python_blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, record_property):
    blocks = [b for b in python_blocks(page) if b["not_run"] is None]
    skip_reason = None
    for k, block in enumerate(blocks):
        missing = missing_imports(block["source"])
        if missing:
            skip_reason = f"{block['page']}:{block['line']} and after need {', '.join(missing)}"
            blocks = blocks[:k]
            break
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    env = dict(
        os.environ,
        MADEFLOW_DOCS_QUICK="1",
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    start, cpu_start = time.perf_counter(), _children_cpu()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, "blocks.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT,
    )
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    record_property("seconds", round(seconds, 1))
    record_property("cpu_seconds", round(cpu, 1))
    print(f"{page.name}: {len(blocks)} blocks in {seconds:.1f} s ({cpu:.1f} s of CPU time)")
    absent = missing_at_run_time(proc.stderr) if proc.returncode else []
    if absent:  # an optional package the library itself imports (e.g. the cli extra's)
        pytest.skip(f"{page.name} needs {', '.join(absent)}, which is not installed")
    assert proc.returncode == 0, proc.stderr[-4000:]
    if skip_reason:
        pytest.skip(skip_reason)
