"""``callbridge init``: write a commented starter configuration and say what to do next."""

from __future__ import annotations

import argparse
import shlex
import sys

from bridge.cli import common
from bridge.config import starter


def register(commands: common.Commands) -> None:
    init = common.add_command(
        commands, "init", "write a commented starter configuration file (every section, "
        "secrets read from environment variables)")
    init.add_argument("--path", metavar="FILE.toml", default=starter.DEFAULT_PATH,
                      help="where to write it")
    init.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    init.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path: str = args.path
    try:
        with open(path, "w" if args.force else "x", encoding="utf-8") as f:
            f.write(starter.TEXT)
    except FileExistsError:
        print(f"callbridge: {path} already exists; to replace it, run again with --force",
              file=sys.stderr)
        return common.EXIT_CONFIG
    except OSError as exc:
        print(f"callbridge: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return common.EXIT_CONFIG
    print(next_steps(path), flush=True)
    return common.EXIT_OK


def next_steps(path: str) -> str:
    active, commented = starter.variables()
    quoted = shlex.quote(path)
    lines = [f"wrote {path}: a starter configuration, one comment per key", "next:",
             "  1. set the secrets it reads from the environment:"]
    for name in active:
        lines.append(f"       export {name}=...   # {_HINTS.get(name, 'a secret')}")
    lines += [
        f"     and, for each provider block you uncomment, its own: {', '.join(commented)}",
        f"  2. edit {path}: uncomment the blocks of your providers ([[antbuddy]], [[quickom]], "
        "[[epacific]], [[kompaas]]) and fill in their accounts",
        f"  3. callbridge check --config {quoted}            (reads it as serve would)",
        f"     callbridge check --config {quoted} --online   (also reaches Redis and tries "
        "each provider's credentials)",
        f"  4. callbridge serve --config {quoted}",
    ]
    return "\n".join(lines)


_HINTS = {
    "JWT_SECRET": "32 characters or more, e.g. "
                  "$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
}
