"""The README's Usage section is checked against ``--help``: every command has an entry and
every long flag a command takes is mentioned there, so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edgec.cli import main_group

README = Path(__file__).resolve().parent.parent / "README.md"


def usage_section() -> str:
    text = README.read_text()
    start = text.index("## Usage")
    return text[start : text.index("\n## ", start + 1)]


def commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_has_a_usage_entry():
    usage = usage_section()
    for path, _ in commands(main_group):
        entry = next((line for line in usage.splitlines() if line.startswith(f"edgec {path[0]}")), None)
        assert entry is not None, f"README Usage has no 'edgec {path[0]}' line"
        assert re.search(rf"\b{re.escape(path[-1])}\b", usage[usage.index(entry):]), f"'edgec {' '.join(path)}'"


def test_every_flag_is_in_the_usage_section():
    usage = usage_section()
    missing = [f"edgec {' '.join(path)} {flag}" for path, command in commands(main_group)
               for param in command.params for flag in (*param.opts, *param.secondary_opts)
               if flag.startswith("--") and flag != "--help" and not re.search(rf"{re.escape(flag)}(?![\w-])", usage)]
    assert missing == []
