"""ferryman's backend SDK: serve the envelope dialect (docs/protocol.md) behind plain handlers.

See docs/sdk.md.  ``Server`` listens for proxy connections; a handler ``async def (session, body) ->
bytes | None`` reads and changes ``session.state[partition][key]``; the SDK reports the changes as
deltas, answers ``missing`` for partitions it does not hold, and honours fences, restores and releases.
"""

from replay.sdk.server import Handler, Server, ServerStatistics, Session, SessionStatus
from replay.sdk.state import MissingPartition, Partition, SessionFrozen, SessionState, StateError

__all__ = [
    "Handler",
    "MissingPartition",
    "Partition",
    "Server",
    "ServerStatistics",
    "Session",
    "SessionFrozen",
    "SessionState",
    "SessionStatus",
    "StateError",
]
