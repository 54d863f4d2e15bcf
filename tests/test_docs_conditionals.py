"""Every Python block of docs/conditionals.md runs as written."""

import re
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).parent.parent / "docs" / "conditionals.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs(index):
    torch.set_default_dtype(torch.float32)  # as a reader's session
    exec(compile(BLOCKS[index], f"{PAGE.name}[block {index}]", "exec"), {})
