"""The README's Python example runs as written (paths swapped for the test world's)."""

from __future__ import annotations

import re
from pathlib import Path

from lora_recycle.adapters import read_peft_adapter

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(tmp_path, world, capsys):
    block = re.search(r"### From Python.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    paths = {'"models/base"': world["model"], '"tasks/mytask"': world["tasks"]["colour"], '"pool.db"': world["db"],
             '"merged"': str(tmp_path / "merged")}
    code = block
    for old, new in paths.items():
        code = code.replace(old, repr(new))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("[") and len(read_peft_adapter(tmp_path / "merged").modules) > 0
