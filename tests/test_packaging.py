"""The package is releasable: license, metadata, one version, typed, a changelog."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import madeflow

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_license_is_an_spdx_string_with_its_file():
    assert PROJECT["license"] == "MIT"  # PEP 639, not the deprecated table form
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "madeflow developers" in text
    assert "License ::" not in " ".join(PROJECT["classifiers"])  # PEP 639 forbids both
    (requirement,) = PYPROJECT["build-system"]["requires"]
    assert int(re.fullmatch(r"setuptools>=(\d+)", requirement).group(1)) >= 77


def test_metadata_for_users():
    assert PROJECT["authors"] == [{"name": "madeflow developers"}]
    assert {"Homepage", "Documentation", "Source", "Changelog"} <= set(PROJECT["urls"])
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert (ROOT / "madeflow" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["madeflow"]


def test_one_version_written_once():
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "madeflow.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", madeflow.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{madeflow.__version__}]" in changelog and "## [Unreleased]" in changelog


def test_extras_carry_the_command_line():
    extras = PROJECT["optional-dependencies"]
    assert set(extras["cli"]) == {"matplotlib", "scikit-learn", "tqdm"}
    assert "madeflow[cli]" in extras["test"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_the_readme_set_up_installs_the_test_extra_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert any('pip install -e ".[test]"' in line for line in commands)
    test_command = next(line for line in commands if "pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command.strip() in [line.strip() for line in ci]


def test_the_version_is_what_the_installed_metadata_would_say():
    """setuptools reads the version statically, without importing madeflow (or torch)."""
    code = (
        "import sys; sys.modules['torch'] = None  # importing madeflow would fail\n"
        "from setuptools.config.expand import read_attr\n"
        "print(read_attr('madeflow.__version__', package_dir={'': sys.argv[1]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == madeflow.__version__, out.stderr
