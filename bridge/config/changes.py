"""What a configuration reload changes, block by block. Pure code: no I/O.

Only the provider account arrays (``[[antbuddy]]``, ``[[quickom]]``, ``[[epacific]]``,
``[[kompaas]]``) change at a reload. A block is identified by its stream or provider name
(``antbuddy/<tenant>/<account_id>``, ``<section>/<tenant>``) and compared as a whole: any key
that differs, a secret included, makes it *changed* (stopped and started again); an equal block
is *unchanged* and its running stream or provider is left alone. Every other section is fixed
for the life of the process: a difference there is reported as needing a restart and the old
values stay in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.config.model import _ARRAYS, _SECTIONS, Config

#: The account arrays a reload applies, in the order the service builds them.
ACCOUNT_SECTIONS: tuple[str, ...] = tuple(_ARRAYS)
#: The sections a reload cannot change (``[[webhook]]`` targets too: their leases and
#: consumer groups are set up once, at start).
FIXED_SECTIONS: tuple[str, ...] = (*_SECTIONS, "webhook")


def block_name(section: str, block: Any) -> str:
    """The name of one account block: its stream's for AntBuddy, ``<section>/<tenant>`` else."""
    if section == "antbuddy":
        return f"antbuddy/{block.tenant}/{block.account_id}"
    return f"{section}/{block.tenant}"


@dataclass(frozen=True)
class SectionChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "removed": list(self.removed),
                "changed": list(self.changed), "unchanged": list(self.unchanged)}


@dataclass(frozen=True)
class Changes:
    #: Per account array, what happens to its blocks.
    sections: dict[str, SectionChanges]
    #: Fixed sections whose new values differ from the running ones (not applied).
    restart_needed: tuple[str, ...]
    #: The configuration to run: the old one with the new account arrays.
    config: Config

    @property
    def applies_anything(self) -> bool:
        return any(c.added or c.removed or c.changed for c in self.sections.values())

    def as_dict(self) -> dict[str, Any]:
        return {"accounts": {name: c.as_dict() for name, c in self.sections.items()},
                "restart_needed": list(self.restart_needed)}

    def summary(self) -> str:
        """One line for the log, e.g. ``antbuddy +1 -0 ~1 =2; restart needed for [server]``."""
        parts = [f"{name} +{len(c.added)} -{len(c.removed)} ~{len(c.changed)} "
                 f"={len(c.unchanged)}" for name, c in self.sections.items()
                 if c.added or c.removed or c.changed or c.unchanged]
        text = ", ".join(parts) or "no accounts"
        if self.restart_needed:
            text += "; restart needed for " + " ".join(f"[{s}]" for s in self.restart_needed)
        return text


def diff(old: Config, new: Config) -> Changes:
    """Compare the running ``old`` configuration with a freshly loaded ``new`` one."""
    sections = {name: _compare(name, getattr(old, name), getattr(new, name))
                for name in ACCOUNT_SECTIONS}
    restart = tuple(name for name in FIXED_SECTIONS if getattr(old, name) != getattr(new, name))
    config = old.model_copy(update={name: list(getattr(new, name)) for name in ACCOUNT_SECTIONS})
    return Changes(sections=sections, restart_needed=restart, config=config)


def _compare(section: str, old: list[Any], new: list[Any]) -> SectionChanges:
    before = {block_name(section, b): b for b in old}
    after = {block_name(section, b): b for b in new}
    return SectionChanges(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and before[n] != after[n]),
        unchanged=tuple(n for n in after if n in before and before[n] == after[n]),
    )
