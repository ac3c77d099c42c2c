"""Configuration errors as values.

A configuration is checked in full before anything uses it, and every problem comes back at once as a
:class:`ConfigError` carrying the position of the offending YAML node.  ``ferryman check``, ``ferryman
run`` and ``POST /reload`` all render them the same way, one per line::

    ferryman.yaml:12:16: pools[0].servers[1].address: port '90o1' is not a number
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Path segments that can be written bare after a dot; anything else (an unknown key with a space or a
# dot in it) is quoted in brackets so the path stays unambiguous.
_BARE_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")

#: Path used for problems that belong to the file as a whole (syntax errors, an empty file).
ROOT_PATH = "-"


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in a configuration file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class ConfigInvalid(Exception):
    """The configuration is invalid; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors: list[ConfigError] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


def format_path(loc: Sequence[str | int]) -> str:
    """``("pools", 0, "servers", 1, "address")`` -> ``pools[0].servers[1].address``."""
    out: list[str] = []
    for segment in loc:
        if isinstance(segment, int):
            out.append(f"[{segment}]")
        elif _BARE_SEGMENT.fullmatch(segment):
            out.append(f".{segment}" if out else segment)
        else:
            quoted = segment.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'["{quoted}"]')
    return "".join(out) or ROOT_PATH
