"""The README's Python examples run as written (they are what a newcomer copies first)."""

import re
from pathlib import Path

import torch


def test_readme_python_examples_run():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    namespace: dict = {}
    torch.manual_seed(0)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert torch.isfinite(namespace["loss"]) and torch.isfinite(namespace["result"].total)
    assert namespace["organs"].shape == (2, 64, 64, 32)
