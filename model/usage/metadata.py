"""Client metadata: which group each client belongs to, and which clients and resources exist.

File (YAML, or JSON when it ends in ``.json``)::

    clients:            # client id (or client IP) -> group; a client not listed does not exist
      alice: gold
      "10.0.0.7": free
    resources:          # optional; when present, a resource not listed does not exist
      - play
      - login

Counts of a client or a resource that does not exist (any more) go to the ``unknown`` group, never
away: a deleted customer's last requests are still in the month.  Without a metadata file every client
is in the group ``all``; without ``resources`` every resource exists.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass

UNKNOWN_GROUP = "unknown"
DEFAULT_GROUP = "all"
MAX_METADATA_BYTES = 256 * 1024 * 1024


class MetadataError(ValueError):
    """The metadata file cannot be used; the message names the file and every problem found."""


@dataclass(frozen=True, slots=True)
class Metadata:
    clients: Mapping[str, str] | None = None
    resources: frozenset[str] | None = None

    def group(self, client: str, resource: str) -> str:
        if self.resources is not None and resource not in self.resources:
            return UNKNOWN_GROUP
        if self.clients is None:
            return DEFAULT_GROUP
        return self.clients.get(client, UNKNOWN_GROUP)

    def client_group(self, client: str) -> str:
        """The client's own group, whatever its resources (``unknown`` when it does not exist)."""
        if self.clients is None:
            return DEFAULT_GROUP
        return self.clients.get(client, UNKNOWN_GROUP)


NO_METADATA = Metadata()


def load_metadata(path: str | pathlib.Path | None) -> Metadata:
    if path is None:
        return NO_METADATA
    p = pathlib.Path(path)
    try:
        if p.stat().st_size > MAX_METADATA_BYTES:
            raise MetadataError(f"{p}: larger than {MAX_METADATA_BYTES} bytes")
        data = p.read_bytes()
    except OSError as exc:
        raise MetadataError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        if p.suffix == ".json":
            import orjson

            doc = orjson.loads(data)
        else:
            import yaml

            doc = yaml.safe_load(data)
    except Exception as exc:  # the parsers' own errors, whatever their class
        raise MetadataError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from None
    return metadata_from(doc, str(p))


def metadata_from(doc: object, where: str = "<metadata>") -> Metadata:
    problems: list[str] = []
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise MetadataError(f"{where}: expected a mapping with 'clients' and optionally 'resources'")
    unknown = [repr(key) for key in doc if key not in ("clients", "resources")]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        problems.append(
            f"unknown key{'s' if len(unknown) > 1 else ''} {shown} (expected 'clients', 'resources')"
        )
    clients_doc = doc.get("clients")
    clients: dict[str, str] | None = None
    if clients_doc is not None:
        if not isinstance(clients_doc, Mapping):
            problems.append("clients: expected a mapping of client id to group")
        else:
            clients = {}
            for client, group in clients_doc.items():
                if not isinstance(client, str | int) or isinstance(client, bool):
                    problems.append(f"clients: id {client!r} is not a string")
                elif not isinstance(group, str) or not group:
                    problems.append(f"clients.{client}: group {group!r} is not a non-empty string")
                elif group == UNKNOWN_GROUP:
                    problems.append(f"clients.{client}: group name {UNKNOWN_GROUP!r} is reserved")
                else:
                    clients[str(client)] = group
    resources_doc = doc.get("resources")
    resources: frozenset[str] | None = None
    if resources_doc is not None:
        if not isinstance(resources_doc, list) or not all(isinstance(r, str) for r in resources_doc):
            problems.append("resources: expected a list of strings")
        else:
            resources = frozenset(resources_doc)
    if problems:
        raise MetadataError(f"{where}: " + "; ".join(problems))
    return Metadata(clients=clients, resources=resources)
