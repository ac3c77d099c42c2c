"""When the proxy may send the envelope dialect's ``ack`` (sans-IO).

An ``ack`` with seq S tells the backend serving a session that every delta it reported up to and
including its reply to request S is durable in the proxy's partition store, by the store's own rule
(``durable_seq``, docs/store.md "fsync modes and guarantees").

Theory of operation
-------------------
The proxy writes deltas to the store as replies arrive and calls ``commit()`` once per tick (the group
commit).  A *round* is the span between two successful ``commit()`` calls of that tick: every write made
in round r is in the commit that the r-th successful call writes, or in an earlier one when something
else committed meanwhile (the admin API does), so the ``commit_seq`` that call returns, c_r, bounds
them.  Round r is durable once ``durable_seq >= c_r``; with ``fsync: batch`` that may be a later tick's
``commit()`` (the one whose fsync covers c_r).  A ``commit()`` that raises ends no round: its writes
stay in the open round and go with the next successful one.

:class:`CommitRounds` (one per proxy) maps rounds to durability.  :class:`AckTracker` (one per client
connection whose pool sends acks) remembers, per round not yet durable in which the session's deltas
were written, the lowest seq those deltas hold back: a reply's deltas hold back their own request's
seq, and deltas that come without a request (``push``, ``fenced``) hold back the first request not
answered yet.  At each tick the connection may acknowledge

    min(highest answered seq, lowest held-back seq of a round not yet durable - 1)

on the link serving the session, if that is above what the link was last sent.  Requests without
deltas hold nothing back: they are covered as soon as everything before them is.  Nothing is tracked
per request: the highest answered seq is one below the first request still in flight.
"""

from __future__ import annotations

from collections import deque

__all__ = ["AckTracker", "CommitRounds"]


class CommitRounds:
    """Which of the proxy's group-commit rounds the store has made durable.

    ``current`` is the open round (writes made now belong to it); ``durable`` the highest round whose
    writes are all durable.
    """

    __slots__ = ("_waiting", "current", "durable")

    def __init__(self) -> None:
        self.current = 1
        self.durable = 0
        self._waiting: deque[tuple[int, int]] = deque()  # (round, its commit_seq), not yet durable

    def committed(self, commit_seq: int, durable_seq: int) -> int:
        """A ``commit()`` returned ``commit_seq`` and the store now says ``durable_seq``: close the
        current round and return the highest durable round."""
        closed = self.current
        self.current = closed + 1
        waiting = self._waiting
        if durable_seq >= commit_seq:
            waiting.clear()  # every earlier round's commit is at or below this one
            self.durable = closed
            return closed
        waiting.append((closed, commit_seq))
        while waiting and waiting[0][1] <= durable_seq:
            self.durable = waiting.popleft()[0]
        return self.durable


class AckTracker:
    """Ack bookkeeping of one client connection (see the module docstring).

    ``sent`` is the last seq acknowledged on the current link; a new link starts at ``rebase``.
    """

    __slots__ = ("_held", "sent")

    def __init__(self, sent: int = 0) -> None:
        self.sent = sent
        self._held: deque[tuple[int, int]] = deque()  # (round, lowest seq held back), rounds rising

    def wrote(self, round_: int, seq: int) -> None:
        """Deltas of this session were written to the store in round ``round_``; no ack may reach
        ``seq`` until that round is durable."""
        held = self._held
        if held:
            last_round, last_seq = held[-1]
            if last_round == round_:
                if seq < last_seq:
                    held[-1] = (round_, seq)
                return
        held.append((round_, seq))

    def rebase(self, next_seq: int) -> None:
        """The session moved to a link that applies requests from ``next_seq`` on: acks there start
        above ``next_seq - 1``."""
        self.sent = next_seq - 1

    def prune(self, durable_round: int) -> None:
        """Forget the rounds that are durable now."""
        held = self._held
        while held and held[0][0] <= durable_round:
            held.popleft()

    def due(self, durable_round: int, answered: int) -> int:
        """The seq to acknowledge now on the current link, or 0 if nothing new is covered.
        ``answered`` is the highest seq answered so far (every lower one is answered too)."""
        self.prune(durable_round)
        seq = answered
        for _, held in self._held:
            if held <= seq:
                seq = held - 1
        if seq <= self.sent:
            return 0
        self.sent = seq
        return seq

    @property
    def waiting_rounds(self) -> int:
        """Rounds with this session's deltas that are not durable yet."""
        return len(self._held)
