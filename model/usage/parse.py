"""Log lines to access records: ferryman's JSON access log and nginx/Apache combined format.

Both scanners take a block of raw lines (bytes, as ``readlines`` returns them) and, for every line
whose time falls inside ``[start_us, end_us)``, call ``add(t_us, key, client_id, ip, resource, count,
denied, bytes_in, bytes_out)`` (the sessionizer's ``add``).  A line that cannot be read is reported
through ``bad(index_in_block, reason)`` and skipped; a line of another day is only counted.

The record, whatever the format:

- ``key``: the session key.  Access log: the ``session`` id, or (tcp mode, no session) ``"\\0" + ip``.
  Combined: ``ip + "\\0" + user agent``, the usual key of web analytics for logs without sessions.
- ``client_id``: the customer id when the line knows it (access log ``client_id``; the authenticated
  user ``%u`` of a combined line), else None: the session's client is then its IP address.
- ``resource``: access log ``resource`` (listener in tcp mode, message type in frames mode); combined:
  the request path without its query string.
- ``count``: requests in the line (``count`` of a frames batch; 1 for a combined line).
- ``denied``: ``count`` when the line is an authentication or authorisation failure, else 0.  Combined:
  HTTP 401, 403 and 407.  Access log: status ``denied``, ``unauthorized``, ``forbidden`` or those three
  numbers as text.

Speed matters here (``python -m bench usage`` measures it): one ``orjson.loads`` per JSON line, string
splits rather than regular expressions for combined lines, and a cache of each timestamp's minute so
that a line costs one dict lookup and one ``int`` for its time.  Month names are parsed from a fixed
table, never through the C locale (``strptime('%b')`` is locale-dependent).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Sequence

import orjson

from model.usage.localtime import US_PER_S, to_us

AddFn = Callable[[int, str, "str | None", str, str, int, int, int, int], None]
BadFn = Callable[[int, str], None]

#: Access-log statuses (and HTTP codes as text) that count as denied requests.
DENIED_STATUSES = frozenset({"denied", "unauthorized", "forbidden", "401", "403", "407"})
#: HTTP statuses of a combined line that count as denied (authentication / authorisation failures).
DENIED_HTTP = frozenset({"401", "403", "407"})
#: A bad line's reason quotes at most this many characters of it.
REASON_QUOTE_CHARS = 60

_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}


class Format(enum.Enum):
    FERRYMAN = "ferryman"
    COMBINED = "combined"


class BadLine(ValueError):
    """A line that cannot be read; the message is the reason shown to the operator."""


def detect_format(sample: bytes) -> Format | None:
    """The format of a file from its first non-blank line, or None when it is empty."""
    line = sample.lstrip()
    if not line:
        return None
    return Format.FERRYMAN if line.startswith(b"{") else Format.COMBINED


# -- timestamps -------------------------------------------------------------------------------------


def iso_to_us(ts: str) -> int:
    """An ISO-8601 instant (``Z`` or an offset; naive means UTC) as epoch microseconds."""
    if type(ts) is not str or len(ts) < 19 or len(ts) > 40 or ts[10] not in "Tt ":
        raise BadLine(f"ts is not an ISO-8601 time: {_quote(ts)}")
    try:
        when = dt.datetime.fromisoformat(ts)
    except ValueError:
        raise BadLine(f"ts is not an ISO-8601 time: {_quote(ts)}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return to_us(when)


def _minute_us(prefix: str) -> int:
    """``YYYY-MM-DDTHH:MM`` (UTC) as epoch microseconds; raises BadLine."""
    if len(prefix) != 16 or prefix[10] != "T" or not prefix[:4].isdigit():
        raise BadLine(f"ts is not an ISO-8601 time: {_quote(prefix)}")
    try:
        when = dt.datetime.fromisoformat(prefix).replace(tzinfo=dt.UTC)
    except ValueError:
        raise BadLine(f"ts is not an ISO-8601 time: {_quote(prefix)}") from None
    return to_us(when)


def clf_to_us(text: str) -> int:
    """A combined-log time ``17/May/2015:10:05:03 +0000`` as epoch microseconds; raises BadLine."""
    try:
        if len(text) != 26 or text[2] != "/" or text[6] != "/" or text[11] != ":" or text[20] != " ":
            raise ValueError
        month = _MONTHS[text[3:6]]
        sign = text[21]
        if sign not in "+-" or not text[22:26].isdigit():
            raise ValueError
        offset_min = int(text[22:24]) * 60 + int(text[24:26])
        zone = dt.timezone(dt.timedelta(minutes=offset_min if sign == "+" else -offset_min))
        fields = (text[0:2], text[7:11], text[12:14], text[15:17], text[18:20])
        if not all(f.isdigit() for f in fields):
            raise ValueError
        day, year, hour, minute, second = (int(f) for f in fields)
        when = dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except (ValueError, KeyError):
        raise BadLine(f"bad time [{_quote(text)}]") from None
    return to_us(when)


def _quote(value: object) -> str:
    """A piece of the line as it stands (shortened)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= REASON_QUOTE_CHARS else text[:REASON_QUOTE_CHARS] + "..."


def _show(value: object) -> str:
    """A JSON value of the wrong type, in Python's spelling (``'3'`` for a string, ``None``)."""
    text = repr(value)
    return text if len(text) <= REASON_QUOTE_CHARS else text[:REASON_QUOTE_CHARS] + "..."


# -- ferryman access log ----------------------------------------------------------------------------


def ferryman_record(line: bytes) -> tuple[int, str, str | None, str, str, int, int, int, int]:
    """One access-log line as ``(t_us, key, client_id, ip, resource, count, denied, bytes_in,
    bytes_out)``; raises BadLine with the reason.  The slow, careful twin of ``scan_ferryman``."""
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise BadLine("not JSON") from None
    if not isinstance(d, dict):
        raise BadLine("not a JSON object")
    for name in ("ts", "client_ip", "resource"):
        if name not in d:
            raise BadLine(f"no {name}")
    t_us = iso_to_us(d["ts"])
    ip, resource = d["client_ip"], d["resource"]
    session, client_id = d.get("session"), d.get("client_id")
    for name, value, nullable in (
        ("client_ip", ip, False),
        ("resource", resource, False),
        ("session", session, True),
        ("client_id", client_id, True),
    ):
        if not (type(value) is str or (nullable and value is None)):
            raise BadLine(f"{name} is not a string: {_show(value)}")
    numbers = []
    for name, default in (("count", 1), ("bytes_in", 0), ("bytes_out", 0)):
        value = d.get(name, default)
        if type(value) is not int or value < 0:
            raise BadLine(f"{name} is not a non-negative integer: {_show(value)}")
        numbers.append(value)
    count, bytes_in, bytes_out = numbers
    status = d.get("status")
    denied = count if type(status) is str and status in DENIED_STATUSES else 0
    key = session if session is not None else "\0" + ip
    return t_us, key, client_id, ip, resource, count, denied, bytes_in, bytes_out


def scan_ferryman(
    block: Sequence[bytes], start_us: int, end_us: int, add: AddFn, bad: BadFn, minute_cache: dict[str, int]
) -> tuple[int, int, int]:
    """Feed one block of access-log lines; returns ``(used, other_days, last_t_us)``.

    ``minute_cache`` maps ``YYYY-MM-DDTHH:MM`` to epoch microseconds and is kept by the caller across
    blocks (it holds about a day of minutes).
    """
    loads = orjson.loads
    cache_get = minute_cache.get
    denied_statuses = DENIED_STATUSES
    other = nbad = 0
    t = -1
    for i, line in enumerate(block):
        # Fast path: the proxy's own spelling (docs/access-log.md), every field of the right type.
        try:
            d = loads(line)
            ts = d["ts"]
            if len(ts) != 27 or ts[26] != "Z":
                raise LookupError
            base = cache_get(ts[:16])
            if base is None:
                base = minute_cache[ts[:16]] = _minute_us(ts[:16])
            # "SS" + "ffffff" is the microsecond within the minute: one int() for both.
            t = base + int(ts[17:19] + ts[20:26])
            ip = d["client_ip"]
            res = d["resource"]
            sess = d["session"]
            cid = d["client_id"]
            count = d["count"]
            bin_ = d["bytes_in"]
            bout = d["bytes_out"]
            # One test for three numbers: ``|`` raises TypeError unless all are ints, and the result
            # is negative if any of them is.
            if (
                (count | bin_ | bout) < 0
                or type(ip) is not str
                or type(res) is not str
                or (cid is not None and type(cid) is not str)
            ):
                raise LookupError
            if sess is None:
                key = "\0" + ip
            elif type(sess) is str:
                key = sess
            else:
                raise LookupError
            denied = count if d["status"] in denied_statuses else 0
        except Exception:
            # Anything unusual (another ts spelling, a missing key, a wrong type, not JSON at all)
            # goes to ferryman_record, which either reads the line or says precisely why not.
            nbad += 1
            if not line.strip():
                bad(i, "empty line")
                continue
            if b'"kind":"migration"' in line:
                nbad -= 1  # a live migration's record (docs/frames.md): not a request, not an error
                other += 1
                continue
            try:
                t, key, cid, ip, res, count, denied, bin_, bout = ferryman_record(line)
            except BadLine as exc:
                bad(i, str(exc))
                continue
            nbad -= 1
        if start_us <= t < end_us:
            add(t, key, cid, ip, res, count, denied, bin_, bout)
        else:
            other += 1
    # The time of the last line stands for "now": lines come in time order, give or take the slack
    # the callers allow for.
    return len(block) - other - nbad, other, t


def _ts_text(line: bytes) -> str | None:
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    ts = d.get("ts") if isinstance(d, dict) else None
    return ts if type(ts) is str else None


# -- nginx / Apache combined ------------------------------------------------------------------------


def combined_record(
    text: str, time_cache: dict[str, int] | None = None
) -> tuple[int, str, str | None, str, str, int, int, int, int]:
    """One combined (or common) log line, decoded, as a record; raises BadLine with the reason.

    ``%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"``; the referer and user agent are
    optional (common log format), ``%b`` may be ``-``.  ``time_cache`` maps the minute and zone of
    ``%t`` to epoch microseconds, so that most lines cost one lookup for their time.
    """
    parts = text.split(" ", 3)
    if len(parts) != 4:
        raise BadLine("too few fields")
    ip, _ident, user, rest = parts
    if not ip:
        raise BadLine("no client address")
    if rest[:1] != "[" or rest[27:30] != '] "':
        raise BadLine("no [time] followed by a quoted request")
    tkey = rest[1:27]
    # Cache by minute and zone ("17/May/2015:10:05 +0000"); the seconds are added on.
    mkey = tkey[:17] + tkey[20:]
    base = time_cache.get(mkey) if time_cache is not None else None
    if base is None:
        t_us = clf_to_us(tkey)
        if time_cache is not None:
            time_cache[mkey] = t_us - int(tkey[18:20]) * US_PER_S
    else:
        sec = tkey[18:20]
        if not (sec.isascii() and sec.isdigit()):
            raise BadLine(f"bad time [{_quote(tkey)}]")
        t_us = base + int(sec) * US_PER_S
    # The request ends at the first '" ' followed by a three-digit status; a quote inside the request
    # (escaped by the server as \" or \x22) does not end it.
    pos = 30
    while True:
        q = rest.find('" ', pos)
        if q < 0:
            raise BadLine("no status after the request")
        fields = rest[q + 2 :].split(" ", 2)
        if len(fields) >= 2 and len(fields[0]) == 3 and fields[0].isascii() and fields[0].isdigit():
            break
        pos = q + 1
    request = rest[30:q]
    status = fields[0]
    size = fields[1].rstrip("\r\n")
    if size == "-":
        bytes_out = 0
    elif size.isascii() and size.isdigit():
        bytes_out = int(size)
    else:
        raise BadLine(f"size is not a number: {_quote(size)}")
    agent = ""
    if len(fields) == 3:
        tail = fields[2].rstrip("\r\n")
        if len(tail) >= 2 and tail[0] == '"' and tail[-1] == '"':
            both = tail[1:-1].split('" "', 1)
            agent = both[1] if len(both) == 2 else ""
    words = request.split(" ")
    path = words[1] if len(words) >= 2 else request
    cut = path.find("?")
    if cut >= 0:
        path = path[:cut]
    denied = 1 if status in DENIED_HTTP else 0
    client_id = None if user == "-" else user
    return t_us, ip + "\0" + agent, client_id, ip, path, 1, denied, 0, bytes_out


def scan_combined(
    block: Sequence[bytes], start_us: int, end_us: int, add: AddFn, bad: BadFn, time_cache: dict[str, int]
) -> tuple[int, int, int]:
    """Feed one block of combined-format lines; returns ``(used, other_days, last_t_us)``."""
    other = nbad = 0
    t = -1
    for i, raw in enumerate(block):
        # Invalid UTF-8 stays visible as \\xNN rather than failing the line: a path or agent with a
        # stray byte is still a request.
        text = raw.decode("utf-8", "backslashreplace")
        try:
            rec = combined_record(text, time_cache)
        except BadLine as exc:
            nbad += 1
            bad(i, "empty line" if not text.strip() else str(exc))
            continue
        t = rec[0]
        if start_us <= t < end_us:
            add(*rec)
        else:
            other += 1
    return len(block) - other - nbad, other, t


def line_time_us(fmt: Format, line: bytes) -> int | None:
    """The time of one line, or None when it cannot be read (used to find a day in a large file)."""
    try:
        if fmt is Format.FERRYMAN:
            ts = _ts_text(line)
            return None if ts is None else iso_to_us(ts)
        text = line.decode("utf-8", "backslashreplace")
        sp = text.find(" [")
        return clf_to_us(text[sp + 2 : sp + 28]) if sp > 0 else None
    except BadLine:
        return None


SCANNERS = {Format.FERRYMAN: scan_ferryman, Format.COMBINED: scan_combined}
