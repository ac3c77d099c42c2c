"""Sessions, double clicks and per-client counters of one day (sans-IO: records in, counters out).

Rules (DESIGN section 7; worked cases in tests/model/usage/test_usage_sessionize.py, test_usage_daily.py
and test_usage_midnight.py):

- A session is the run of records with one session key in which no gap between a record and the
  session's latest earlier record reaches ``session_timeout_s``.  A record that comes ``timeout`` or
  more after the latest one starts a new session; the old one ended at ``last + timeout``.
- Double clicks: a record of resource R comes less than ``double_click_window_s`` after the session's
  previous record of R (counted or not): it is not counted as a request (its ``count`` goes to
  ``suppressed``), so a chain of clicks closer than the window counts once.  A window of 0 turns this off.
  Bytes and denied requests are counted for every record: they happened whether counted or not.
- A session's counts go to its client only when the session ends, all at once, on the day it ends.  The
  client is the latest client id the session saw (customers log in mid-session), else the IP address of
  its first record.  Each resource the session touched counts one session for that resource.
- Per client IP, every request and denied request is counted, double clicks included: these feed the
  month's top-N by IP, where a burst of denied retries is exactly what must show.  They are added when
  the session ends, to the IP of its first record (a session keeps its address in practice, and this
  keeps the per-record work to the session alone).
- End of day: sessions whose ``last + timeout`` lies after the end of the day are still open; they are
  carried to the next day with their partial counts and per-resource last access times (``finish`` /
  ``restore``), except on the last day of a month, when every session is deemed ended.

Timestamps are integer microseconds.  Records may arrive slightly out of order (lines are written when a
connection or batch ends): a record older than its session's latest one continues the session, and
sessions are only expired ``EXPIRY_MARGIN_S`` after their timeout, so such a record still finds its session.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from model.usage.localtime import US_PER_S

#: Expire sessions this long after their timeout has passed (see "out of order" above).
EXPIRY_MARGIN_S = 300

# Per-resource counters of a session or a client: a list, indexed by these (the hot loop adds in place
# and spells the indices as literals, which is measurably faster than loading these names).
REQUESTS, SUPPRESSED, DENIED, BYTES_IN, BYTES_OUT, LAST_US = range(6)
SESSIONS = LAST_US  # in a client's counters the sixth slot counts sessions instead of a time
# Session state: [client, last_us, {resource: [requests, suppressed, denied, bytes_in, bytes_out, last_us]},
# ip of its first record]
CLIENT, LAST, RESOURCES, IP = range(4)

Counters = list[int]
#: A carried resource: requests, suppressed, denied, bytes_in, bytes_out, last_us.
ResourceState = tuple[int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class OpenSession:
    """A session still open at the end of a day, as carried in the ``.sessions`` file."""

    key: str
    client: str
    ip: str
    last_us: int
    resources: dict[str, ResourceState]


class Sessionizer:
    """Accumulates one day: call ``add`` per record, ``expire(now_us)`` now and then, ``finish``."""

    __slots__ = (
        "_sessions",
        "_timeout_us",
        "_window_us",
        "carried",
        "clients",
        "ended",
        "ips",
        "restored",
    )

    def __init__(self, session_timeout_s: float, double_click_window_s: float) -> None:
        self._timeout_us = round(session_timeout_s * US_PER_S)
        self._window_us = round(double_click_window_s * US_PER_S)
        self._sessions: dict[str, list] = {}
        #: client -> resource -> [requests, suppressed, denied, bytes_in, bytes_out, sessions]
        self.clients: dict[str, dict[str, Counters]] = {}
        #: ip -> [requests, denied], every record counted
        self.ips: dict[str, list[int]] = {}
        self.restored = 0
        self.carried = 0
        self.ended = 0

    # -- the hot path ------------------------------------------------------------------------------

    def add(
        self,
        t: int,
        key: str,
        client_id: str | None,
        ip: str,
        resource: str,
        count: int,
        denied: int,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        # The hot loop of the daily job (bench: ``python -m bench usage``): two dict lookups and a few
        # in-place additions per record; everything per client or per IP waits for the session's end.
        sessions = self._sessions
        s = sessions.get(key)
        if s is not None and t - s[1] >= self._timeout_us:
            self._end(s)
            s = None
        if s is None:
            sessions[key] = [
                ip if client_id is None else client_id,
                t,
                {resource: [count, 0, denied, bytes_in, bytes_out, t]},
                ip,
            ]
            return
        if t > s[1]:
            s[1] = t
        if client_id is not None:
            s[0] = client_id
        per = s[2]
        r = per.get(resource)
        if r is None:
            per[resource] = [count, 0, denied, bytes_in, bytes_out, t]
            return
        if t - r[5] < self._window_us:
            r[1] += count
        else:
            r[0] += count
        if denied:
            r[2] += denied
        r[3] += bytes_in
        r[4] += bytes_out
        if t > r[5]:
            r[5] = t

    # -- ending sessions ---------------------------------------------------------------------------

    def _end(self, s: list) -> None:
        self.ended += 1
        per_client = self.clients.get(s[0])
        if per_client is None:
            per_client = self.clients[s[0]] = {}
        requests = denied = 0
        for resource, r in s[2].items():
            requests += r[0] + r[1]
            denied += r[2]
            c = per_client.get(resource)
            if c is None:
                per_client[resource] = [r[0], r[1], r[2], r[3], r[4], 1]
            else:
                c[0] += r[0]
                c[1] += r[1]
                c[2] += r[2]
                c[3] += r[3]
                c[4] += r[4]
                c[5] += 1
        ip = self.ips.get(s[3])
        if ip is None:
            self.ips[s[3]] = [requests, denied]
        else:
            ip[0] += requests
            ip[1] += denied

    def expire(self, now_us: int) -> int:
        """End the sessions idle past their timeout (plus a margin) at ``now_us``; returns how many.

        Costs one pass over the open sessions: the caller calls it about once per timeout of log time.
        """
        limit = now_us - self._timeout_us - EXPIRY_MARGIN_S * US_PER_S
        done = [key for key, s in self._sessions.items() if s[1] <= limit]
        for key in done:
            self._end(self._sessions.pop(key))
        return len(done)

    def finish(self, day_end_us: int, *, carry: bool) -> list[OpenSession]:
        """End of day: end the sessions that ended by ``day_end_us`` (all of them unless ``carry``) and
        return the rest, sorted by key, for the next day."""
        keep: list[OpenSession] = []
        limit = day_end_us - self._timeout_us
        for key in sorted(self._sessions):
            s = self._sessions[key]
            if carry and s[1] > limit:
                keep.append(
                    OpenSession(
                        key=key,
                        client=s[0],
                        ip=s[3],
                        last_us=s[1],
                        resources={
                            res: (r[0], r[1], r[2], r[3], r[4], r[5]) for res, r in sorted(s[2].items())
                        },
                    )
                )
            else:
                self._end(s)
        self._sessions.clear()
        self.carried += len(keep)
        return keep

    def restore(self, sessions: Iterable[OpenSession]) -> None:
        """Sessions carried from the previous day; call before the first ``add``."""
        for o in sessions:
            self._sessions[o.key] = [
                o.client,
                o.last_us,
                {res: list(r) for res, r in o.resources.items()},
                o.ip,
            ]
            self.restored += 1

    @property
    def open_count(self) -> int:
        return len(self._sessions)

    @property
    def started(self) -> int:
        """Sessions begun by ``add`` (every session restored or begun is either ended or still open)."""
        return self.ended + len(self._sessions) + self.carried - self.restored


def sessionize(
    records: Iterable[tuple[int, str, str | None, str, str, int, int, int, int]],
    session_timeout_s: float,
    double_click_window_s: float,
) -> Iterator[tuple[str, str, Counters]]:
    """Every record of any span in one pass, all sessions ended at the end: ``(client, resource,
    counters)``.  The reference the daily/monthly pipeline must agree with."""
    sz = Sessionizer(session_timeout_s, double_click_window_s)
    for rec in records:
        sz.add(*rec)
    sz.finish(0, carry=False)
    for client in sorted(sz.clients):
        for resource, c in sorted(sz.clients[client].items()):
            yield client, resource, c
