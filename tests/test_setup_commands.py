"""The README's set-up commands, .ci/run and the board install compile the bytecode once: without it every
process compiles the generated codec modules again (this environment sets PYTHONDONTWRITEBYTECODE)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [c.strip() for c in re.findall(r"```sh\n(python3 -m venv \.venv[^\n]*)\n```", text)]


def test_the_readme_has_two_setup_commands_that_compile_bytecode() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    main, tests = commands
    assert main.endswith("edge simulate") and tests.endswith("-m pytest")
    for command in commands:
        assert re.search(r"-m compileall [^&]*\bexi\b", command), command


def test_ci_runs_the_readme_test_command_as_written() -> None:
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == _readme_commands()[1]


def test_the_board_install_compiles_bytecode() -> None:
    text = (REPO / "README.md").read_text()
    install = next(line for line in text.splitlines() if "/opt/edge/bin/pip install" in line)
    assert "compileall" in install
