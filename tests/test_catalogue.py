"""The counts in ``docs/reliability.md`` are the sizes of the case tables the suite runs."""

from __future__ import annotations

import re
from pathlib import Path

import test_bad_inputs
import test_cli_safety
import test_data_bad_files
import test_loaded_values
import test_numerical_failures
import test_runs_integrity

DOC = Path(__file__).parent.parent / "docs" / "reliability.md"

# Phrase in the docs' counts row -> the table(s) it counts.
TABLES = {
    "in `CASES` of `test_bad_inputs.py`": [test_bad_inputs.CASES],
    "odd data files": [test_data_bad_files.FILE_CASES],
    "API calls": [test_numerical_failures.API_CASES],
    "tampered MADE buffers": [test_loaded_values.BUFFER_CASES],
    "model settings": [test_loaded_values.OPTION_CASES],
    "damaged training states": [test_loaded_values.STATE_CASES],
    "bad commands": [test_cli_safety.CLI_CASES],
    "drift and tampering cases": [test_runs_integrity.FINGERPRINT_CASES],
    "`config.json` values or files": [test_runs_integrity.CONFIG_CASES, range(5)],
    "`model.pt` fields": [test_runs_integrity.CHECKPOINT_CASES],
    "`train_state.pt` files": [test_runs_integrity.STATE_FILE_CASES],
}


def test_the_documented_counts_are_the_table_sizes():
    text = DOC.read_text()
    total = 0
    for phrase, tables in TABLES.items():
        size = sum(len(t) for t in tables)
        total += size
        assert re.search(rf"\b{size} {re.escape(phrase)}", text), (phrase, size)
    assert f"**{total}** table cases" in text


def test_the_unreadable_config_cases_are_five():
    """``range(5)`` above stands for ``test_unreadable_config_is_one_line``'s parameters."""
    marks = test_runs_integrity.test_unreadable_config_is_one_line.pytestmark
    assert len(marks[0].args[1]) == 5
