"""The command line explains itself: help and default for every flag, --version, the cli extra."""

from __future__ import annotations

import argparse
import sys

import pytest

import madeflow
from madeflow import cli
from madeflow.cli.parser import build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flag_has_help_and_its_default():
    commands = _subcommands()
    assert sorted(commands) == ["evaluate", "fit", "impute", "plot", "sample"]
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, flag
            if not action.required:  # a required argument has no default to show
                assert "(default" in action.help, flag


@pytest.mark.parametrize(
    ("command", "flag", "shown"),
    [
        ("fit", "--lr", "default: 0.001"),
        ("fit", "--batch-size", "100 for digits"),
        ("fit", "--epochs", "300 for digits"),
        ("fit", "--seed", "default: 0"),
        ("sample", "-n", "default: 1000"),
        ("evaluate", "--split", "default: test"),
    ],
)
def test_help_shows_the_defaults(command, flag, shown, capsys):
    assert cli.main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert flag in out and shown in out


def test_version_is_the_package_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"madeflow {madeflow.__version__}"


def test_without_the_cli_extra_one_line_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    for module in ("matplotlib", "sklearn"):
        monkeypatch.setitem(sys.modules, module, None)  # find_spec answers None: not installed
    assert cli.missing_extra() == ["matplotlib", "scikit-learn"]
    assert cli.main(["fit", "moons", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("madeflow: error:")
    assert "matplotlib, scikit-learn" in err and 'pip install "madeflow[cli]"' in err
    assert not (tmp_path / "run").exists()
    assert cli.main(["--version"]) == 0  # still answers
    assert cli.main(["fit", "--help"]) == 0


def test_with_the_cli_extra_nothing_is_missing():
    assert cli.missing_extra() == []
