"""The README's first command is what CI runs (``scripts/readme-first-command`` takes it from the
README, ``.ci/run`` runs that before the tests), it installs every environment distribution in the
repository, and it stays in the form pip before 24 resolves (pypa/pip#9204)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "readme-first-command"


def readme_first_command() -> str:
    out = subprocess.run([str(SCRIPT), "--print"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_script_takes_the_readme_first_command_as_written():
    command = readme_first_command()
    first_indented = next(line[4:] for line in (ROOT / "README.md").read_text().splitlines()
                          if line.startswith("    ") and not line.startswith("     "))
    assert command == first_indented
    assert command.startswith("python3 -m pip install ") and command.endswith("&& hvsim run --env bare_metal")


def test_the_first_command_installs_every_plugin_distribution_in_the_repository():
    install = shlex.split(readme_first_command().split("&&")[0])
    paths = {Path(arg).as_posix().removeprefix("./") for arg in install if arg.startswith("./")}
    plugins = {p.parent.relative_to(ROOT).as_posix()
               for p in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]}
    assert plugins and paths == plugins


def test_the_first_command_names_hvsim_without_extras_for_pip_before_24():
    # pip < 24 does not let an editable with extras ('.[test]') satisfy the plugins' plain `hvsim`
    # requirement; the plain editable beside it does.
    install = shlex.split(readme_first_command().split("&&")[0])
    editables = [install[i + 1] for i, arg in enumerate(install) if arg == "-e"]
    assert "." in editables and ".[test]" in editables


def test_ci_runs_the_first_command_before_the_tests():
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert "scripts/readme-first-command" in lines
    assert lines.index("scripts/readme-first-command") < next(i for i, line in enumerate(lines) if "tox" in line)
