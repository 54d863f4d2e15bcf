"""The docs site builds with warnings as errors, offline, with the whole public API."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import madeflow

DOCS = Path(__file__).parent.parent / "docs"
SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE)
STYLESHEET = re.compile(r"<link\b[^>]*\bstylesheet\b[^>]*>", re.IGNORECASE)
HREF = re.compile(r"\bhref\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE)
REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def remote_assets(html: str) -> list[str]:
    """Scripts and stylesheets a page would fetch from another host."""
    links = [h for tag in STYLESHEET.findall(html) for h in HREF.findall(tag)]
    return [u for u in SCRIPT_SRC.findall(html) + links if REMOTE.match(u)]


def test_docs_build_without_warnings(site):
    assert (site / "index.html").exists()
    assert (site / "api.html").read_text().count("madeflow.MADE") > 0


def test_remote_asset_detector():
    assert remote_assets('<script defer src="https://cdn.x/mathjax.js"></script>') == [
        "https://cdn.x/mathjax.js"
    ]
    assert remote_assets("<script src=//cdn.x/a.js>") == ["//cdn.x/a.js"]
    assert remote_assets('<link rel="stylesheet" href="https://fonts.x/a.css" />') == [
        "https://fonts.x/a.css"
    ]
    local = (
        '<script src="_static/mathjax/tex-chtml.js"></script><link rel="stylesheet" href="a.css">'
    )
    assert remote_assets(local) == []


def test_no_page_loads_scripts_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    remote = {p.name: remote_assets(p.read_text(encoding="utf-8")) for p in pages}
    assert not {k: v for k, v in remote.items() if v}


def test_math_is_rendered_by_a_bundled_mathjax(site):
    concepts = (site / "concepts.html").read_text(encoding="utf-8")
    scripts = [s for s in SCRIPT_SRC.findall(concepts) if "mathjax" in s.lower()]
    assert scripts, "a page with math loads no MathJax"
    for src in scripts:
        assert (site / src.split("?")[0]).is_file(), src


def test_api_page_names_every_public_name(site):
    api = (site / "api.html").read_text(encoding="utf-8")
    missing = [name for name in madeflow.__all__ if f'id="madeflow.{name}"' not in api]
    assert not missing, f"add these to docs/api.md: {missing}"
