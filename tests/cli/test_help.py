"""Every command's --help, through the real command: it stands alone (every option says what
it is for), shows no markup, and the top-level help lists every command."""

from __future__ import annotations

import argparse
import re

import pytest

from bridge.cli import build_parser
from tests.cli.run import callbridge


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _every_command() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        found.append(path)
        for name, sub in _subcommands(parser).items():
            walk((*path, name), sub)

    walk((), build_parser())
    return found


COMMANDS = _every_command()


def test_the_walk_finds_the_commands():
    names = {" ".join(path) for path in COMMANDS}
    assert {"", "serve", "token", "api-token", "simulate", "tail", "admin", "admin revoke",
            "bench"} <= names


def _argument_lines(help_text: str) -> list[tuple[str, str]]:
    """(invocation, its help text) for each option and positional argument of the help.

    An argument line is indented two spaces; its help follows on the same line after two
    spaces or more, or on the next lines, indented further.
    """
    lines = help_text.splitlines()
    found = []
    section = ""
    described = False
    for i, line in enumerate(lines):
        if line and not line.startswith(" "):
            section = line
            # an argument group's heading is followed by its description, then a blank line
            described = section not in ("options:", "positional arguments:")
            continue
        if described:
            described = bool(line.strip())
            continue
        option = re.match(r"  -", line)
        positional = section == "positional arguments:" and re.match(r"  \S", line)
        if not (option or positional):
            continue  # usage, description, a group's description, wrapped help
        invocation, _, text = line.strip().partition("  ")
        if not text.strip() and i + 1 < len(lines) and re.match(r"\s{6,}\S", lines[i + 1]):
            text = lines[i + 1].strip()
        found.append((invocation, text.strip()))
    return found


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "callbridge")
def test_help_stands_alone(path):
    result = callbridge(*path, "--help", env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "``" not in out
    arguments = _argument_lines(out)
    assert arguments, out
    bare = [invocation for invocation, text in arguments if not text]
    # The top level's list of commands has a heading (COMMAND) and each command its help.
    assert bare in ([], ["COMMAND"]) if not path else bare == [], out


def test_top_level_help_lists_every_command():
    out = callbridge("--help", env={"COLUMNS": "100"}).stdout
    listed = {line.split()[0] for line in out.splitlines() if re.match(r"    \S", line)}
    assert listed == set(_subcommands(build_parser()))


def _help(*path: str) -> str:
    """The help of ``callbridge PATH``, its wrapped lines joined."""
    result = callbridge(*path, "--help", env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())


def test_defaults_are_shown():
    assert "(0: any free port) (default: 8090)" in _help("simulate")
    assert "(default: demo)" in _help("simulate")
    assert "list at most this many (per instance with --all) (default: 1000)" in _help(
        "admin", "clients")
    assert "(default: redis://127.0.0.1:6379/0)" in _help("bench")
    assert "seconds until it expires (default: 3600.0)" in _help("token")


def test_revoke_help_says_where_the_jti_comes_from():
    assert "callbridge token prints it on stderr (jti=...)" in _help("admin", "revoke")
