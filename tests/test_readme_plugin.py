"""The minimal plugin the README shows is a working environment: taken from the README as written,
it boots the probe and joins the matrix with no undeclared difference."""

from __future__ import annotations

import re
import types
from pathlib import Path

import hvsim_bare_metal
from hvsim import get_plugin_manager
from hvsim.matrix import run_matrix

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_plugin() -> types.ModuleType:
    text = README.read_text()
    source = re.search(r"```python\n(# my_env\.py\n.*?)```", text, re.S).group(1)
    module = types.ModuleType("my_env")
    exec(compile(source, "README.md:my_env.py", "exec"), module.__dict__)
    assert 'my_pvh = "my_env"' in text          # the one entry-point line names this module
    return module


def test_the_readme_plugin_boots_the_probe_and_joins_the_matrix():
    pm = get_plugin_manager(load_entrypoints=False, plugins=[hvsim_bare_metal, readme_plugin()])
    matrix = run_matrix(pm=pm)
    assert list(matrix.columns) == ["bare_metal", "my_pvh"]
    assert matrix.exit_status == 0 and matrix.columns["my_pvh"]["semantics"]["entry"] == "pvh"
    assert {d.field for d in matrix.differences} == {"entry", "entry_mode"}
