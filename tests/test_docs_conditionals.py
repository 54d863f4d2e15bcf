"""The Python blocks of docs/conditionals.md run as written, in order, in a fresh folder."""

import re
from pathlib import Path

import torch

PAGE = Path(__file__).parent.parent / "docs" / "conditionals.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_has_python_blocks():
    assert len(BLOCKS) >= 3


def test_blocks_run_in_order_in_a_fresh_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a reader's empty folder: nothing to lean on
    torch.set_default_dtype(torch.float32)  # as a reader's session
    namespace: dict = {}
    for index, block in enumerate(BLOCKS):
        exec(compile(block, f"{PAGE.name}[block {index}]", "exec"), namespace)
