"""The ferryman configuration file format: one frozen pydantic model per section.

Rules this module keeps:

- A loaded configuration is a value.  Every model is frozen and its lists are tuples, so a reload builds
  a new :class:`Config` and the runtime diffs old against new with ``==``.
- Unknown keys are errors (``extra="forbid"``): a misspelt key must never be silently ignored.
- Scalars are checked strictly.  YAML has already typed every scalar, so ``"5"`` (a quoted string)
  where a number belongs, or ``yes`` where a count belongs, is a mistake worth reporting, not coercing.
  Integers are accepted where a float is expected.
- Every field has a ``description``; they become the JSON schema in ``config/schema.json``.
- Checks within one section (``low_water_bytes < high_water_bytes``) are model validators.  Checks across
  sections (unique names, a listener's pool must exist) live in :func:`cross_check`, which works on plain
  data so the loader can report them together with every other error, even when other parts of the file
  are invalid.

Regenerate the committed schema with ``python -m proxy.conf.schema > config/schema.json``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]

# -- host:port ------------------------------------------------------------------------------------

_PORT = re.compile(r"[0-9]{1,5}")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")
# RFC 1123 host names; underscores are tolerated because container runtimes hand them out as names.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _valid_host_name(host: str) -> bool:
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def parse_hostport(text: str) -> tuple[str, int]:
    """Split ``host:port`` into ``(host, port)``; an IPv6 address goes in brackets: ``[::1]:7000``.

    The host comes back without brackets, ready for ``loop.create_server`` / ``open_connection``.
    Port 0 is accepted (a listener bound to port 0 takes any free port).  Raises ``ValueError`` with a
    message meant for an operator.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected 'host:port' as a string, got {type(text).__name__}")
    if not text or text != text.strip() or any(ch.isspace() for ch in text):
        raise ValueError("expected 'host:port' without spaces, e.g. 127.0.0.1:7000 or [::1]:7000")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' after the IPv6 address, e.g. [::1]:7000")
        host, rest = text[1:end], text[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError("expected ':port' after the bracketed IPv6 address, e.g. [::1]:7000")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected 'host:port', e.g. 127.0.0.1:7000 or [::1]:7000")
        if ":" in host:
            raise ValueError("an IPv6 address must be written in brackets, e.g. [::1]:7000")
        if not host:
            raise ValueError("missing host before ':port' (use 0.0.0.0 or [::] for every interface)")
        if not _valid_host_name(host):
            raise ValueError(f"{host!r} is not a valid host name or IPv4 address")
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"port {port_text!r} is not a number" if port_text else "missing port after ':'")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0..65535)")
    return host, port


def _check_bind(text: str) -> str:
    parse_hostport(text)
    return text


def _check_address(text: str) -> str:
    _, port = parse_hostport(text)
    if port == 0:
        raise ValueError("port 0 cannot be connected to (it means 'any free port' only for a bind)")
    return text


def _check_time_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name such as UTC or Europe/Paris)"
        ) from None
    return name


def _check_unique(items: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{item!r} is listed more than once")
        seen.add(item)
    return items


def _exact_int(value: Any) -> Any:
    # Literal[1, 5, 60] alone would accept true (== 1) and 5.0; a count of seconds is an integer.
    if type(value) is not int:
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
#: Plain-English wording for each pattern the schema uses (the loader shows it instead of the regex).
PATTERN_MESSAGES = {NAME_PATTERN: "must be a name made of letters, digits, '_', '.' and '-'"}

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
Text = Annotated[StrictStr, Field(min_length=1)]
Seconds = Annotated[float, Strict(), Field(gt=0)]
SecondsOrZero = Annotated[float, Strict(), Field(ge=0)]
Bind = Annotated[StrictStr, AfterValidator(_check_bind), Field(examples=["127.0.0.1:7000", "[::1]:7000"])]
Address = Annotated[
    StrictStr, AfterValidator(_check_address), Field(examples=["10.0.0.5:9001", "game-1:9001"])
]
TimeZone = Annotated[StrictStr, AfterValidator(_check_time_zone), Field(examples=["UTC", "Europe/Paris"])]
Partitions = Annotated[tuple[Name, ...], AfterValidator(_check_unique)]


def _raise_at(model: str, problems: list[tuple[Loc, str]], inputs: list[Any] | None = None) -> None:
    """Raise one validation error per problem, each at its own location inside the model.

    pydantic nests a ``ValidationError`` raised by a validator under the model's location, so the
    loader can point at the exact field rather than at the enclosing mapping.  ``inputs`` gives the
    offending value of each problem (the loader skips values it already reported as unreadable)."""
    if problems:
        raise ValidationError.from_exception_data(
            model,
            [
                InitErrorDetails(
                    type=PydanticCustomError("ferryman", "{message}", {"message": msg}),
                    loc=loc,
                    input=None if inputs is None else inputs[i],
                )
                for i, (loc, msg) in enumerate(problems)
            ],
        )


def _value_at(data: Any, path: Loc) -> Any:
    """The value at ``path`` inside nested lists and mappings, or None where there is none."""
    for step in path:
        if isinstance(data, Mapping) and step in data:
            data = data[step]
        elif isinstance(data, list | tuple) and type(step) is int and 0 <= step < len(data):
            data = data[step]
        else:
            return None
    return data


class _Derived:
    """A value computed from a model's fields, kept with it: equal to any other, so that comparing two
    configurations compares only what the file says (the fields), not objects built from it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Derived)

    def __hash__(self) -> int:
        return 0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


# -- sections ---------------------------------------------------------------------------------------


class GlobalSettings(_Model):
    """Process-wide settings."""

    loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="Event loop: uvloop when installed (auto), or force uvloop or the stdlib asyncio loop.",
    )
    drain_timeout_s: Seconds = Field(
        default=30.0,
        description="On SIGTERM or POST /drain, how long open connections may finish before they are closed.",
    )
    tick_s: Seconds = Field(
        default=1.0, description="Housekeeping period: idle sweeps, counter snapshots, log flushes."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    log_file: Text = Field(default="-", description="Where JSON log lines go; '-' means stderr.")
    access_log: Text | None = Field(
        default=None,
        description="Access log (one JSON line per connection or frame batch): a path, '-' for stdout, null for off.",
    )
    high_water_bytes: StrictInt = Field(
        default=262144,
        ge=1024,
        description="Per-direction write-buffer high-water mark: above it the proxy stops reading from the other side.",
    )
    low_water_bytes: StrictInt = Field(
        default=65536,
        ge=0,
        description="Reading resumes once the write buffer drains below this; must be < high_water_bytes.",
    )

    @model_validator(mode="after")
    def _water_marks(self) -> GlobalSettings:
        if self.low_water_bytes >= self.high_water_bytes:
            # Point at whichever of the two the file actually set (the other is a default).
            if "low_water_bytes" in self.model_fields_set or "high_water_bytes" not in self.model_fields_set:
                loc: Loc = ("low_water_bytes",)
                msg = f"must be less than high_water_bytes ({self.high_water_bytes})"
            else:
                loc = ("high_water_bytes",)
                msg = f"must be greater than low_water_bytes ({self.low_water_bytes})"
            _raise_at("GlobalSettings", [(loc, msg)])
        return self


class Listener(_Model):
    """A listening socket (HAProxy's frontend) whose clients are placed on one pool."""

    name: Name = Field(description="Unique listener name; used in logs, metrics and the admin API.")
    bind: Bind = Field(description="host:port to listen on; IPv6 as [::1]:7000; port 0 takes any free port.")
    mode: Literal["tcp", "frames"] = Field(
        default="tcp",
        description="tcp relays bytes; frames parses length-prefixed frames (needed for session replay).",
    )
    pool: Name = Field(description="Name of the pool that serves this listener's clients.")
    max_connections: StrictInt = Field(
        default=10000,
        ge=1,
        description="Connections accepted at once; further clients are closed straight away.",
    )
    backlog: StrictInt = Field(default=1024, ge=1, description="listen(2) backlog of the socket.")
    accept_proxy: StrictBool = Field(
        default=False,
        description="Expect a PROXY protocol v1 or v2 header from every client (opt-in, never guessed), "
        "before its bytes (tcp) or its first frame (frames); its source address becomes the client address.",
    )
    proxy_header_timeout_s: Seconds = Field(
        default=3.0,
        description="With accept_proxy, close a client that has not sent a complete header in this time.",
    )
    idle_timeout_s: SecondsOrZero = Field(
        default=600.0,
        description="Close a connection with no bytes in either direction for this long; 0 disables.",
    )
    frame_header_bytes: Literal[1, 2, 4, 8] = Field(
        default=4, description="frames mode: size of the length prefix of every client frame."
    )
    frame_byteorder: Literal["big", "little"] = Field(
        default="big", description="frames mode: byte order of the length prefix."
    )
    max_frame_bytes: StrictInt = Field(
        default=1 << 20,
        ge=1,
        description="frames mode: a client frame longer than this closes the connection (frame_too_large).",
    )
    session_field: Name = Field(
        default="sid",
        description="frames mode: field of the first client frame (a msgpack map) that holds the session id; "
        "a client without one gets a fresh id.",
    )
    session_secret: Text | None = Field(
        default=None,
        description="frames mode: HMAC key of session tokens; when set, a client naming a session must send "
        "its token in session_token_field (forgeries are refused).",
    )
    session_token_field: Name = Field(
        default="token", description="frames mode: field of the first client frame that holds the session token."
    )
    max_buffered_bytes: StrictInt = Field(
        default=256 * 1024,
        ge=1,
        description="frames mode: client bytes held while a connection waits for its backend or a migration; "
        "past this, reading from the client pauses.",
    )


class HealthCheck(_Model):
    """Active TCP health checks of a pool's servers."""

    enabled: StrictBool = Field(
        default=True, description="Check the servers; when off every server counts as up."
    )
    interval_s: Seconds = Field(default=2.0, description="Time between two checks of one server.")
    timeout_s: Seconds = Field(
        default=1.0, description="A check fails if it has not connected in this time; <= interval_s."
    )
    rise: StrictInt = Field(
        default=2, ge=1, description="Consecutive successful checks before a down server is up."
    )
    fall: StrictInt = Field(
        default=3, ge=1, description="Consecutive failed checks before an up server is down."
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HealthCheck:
        if self.timeout_s > self.interval_s:
            if "timeout_s" in self.model_fields_set or "interval_s" not in self.model_fields_set:
                problem: tuple[Loc, str] = (
                    ("timeout_s",),
                    f"must be at most interval_s ({self.interval_s:g})",
                )
            else:
                problem = (("interval_s",), f"must be at least timeout_s ({self.timeout_s:g})")
            _raise_at("HealthCheck", [problem])
        return self


class Server(_Model):
    """One backend server of a pool."""

    name: Name = Field(description="Server name, unique within its pool.")
    address: Address = Field(description="host:port the proxy connects to; IPv6 as [::1]:9001.")
    requires: Partitions | None = Field(
        default=None,
        description="Session-state partitions this server needs replayed on migration; a list replaces the "
        "pool's requires, null inherits it.",
    )
    state: Literal["ready", "drain", "maint"] = Field(
        default="ready",
        description="Initial admin state: ready takes new connections, drain keeps its connections but takes no "
        "new ones, maint takes nothing.",
    )

    def effective_requires(self, pool: Pool) -> tuple[str, ...]:
        """The partitions this server needs: its own list, or else its pool's."""
        return self.requires if self.requires is not None else pool.requires


class Pool(_Model):
    """A set of interchangeable servers (HAProxy's backend) and how connections are spread over them."""

    name: Name = Field(description="Unique pool name; listeners refer to it.")
    balance: Literal["consistent", "round_robin", "least_conn"] = Field(
        default="consistent",
        description="consistent: jump consistent hash with bounded loads; round_robin; least_conn: fewest "
        "active connections.",
    )
    hash_key: Literal["client_ip", "session"] = Field(
        default="client_ip",
        description="What the consistent balancer hashes: the client's IP or the session id.",
    )
    hash_balance_factor: Annotated[float, Strict()] = Field(
        default=1.25,
        ge=1.0,
        description="Bounded-load factor c: no server takes more than c times the average load (1.0 = strict).",
    )
    dialect: Literal["envelope", "plain"] = Field(
        default="envelope",
        description="Backend dialect in frames mode: envelope carries session-state deltas, plain passes frames "
        "through.",
    )
    requires: Partitions = Field(
        default=(), description="Partitions every server of the pool needs (unless it overrides)."
    )
    connect_timeout_s: Seconds = Field(default=5.0, description="Time allowed to connect to a server.")
    connect_retries: StrictInt = Field(
        default=2,
        ge=0,
        description="After a failed connect, how many further servers are tried before giving up.",
    )
    send_proxy: Literal["none", "v1", "v2"] = Field(
        default="none", description="Send a PROXY protocol header of this version to the servers."
    )
    health_check: HealthCheck = Field(
        default_factory=lambda: HealthCheck(), description="Active health checks."
    )
    migration_timeout_s: Seconds = Field(
        default=5.0, description="frames mode: a migration phase that takes longer than this rolls back."
    )
    migrations_per_s: Annotated[float, Strict()] = Field(
        default=1000.0,
        gt=0,
        description="frames mode: migrations started towards one server per second at most (token bucket, "
        "burst of one second's worth); more are deferred.",
    )
    idempotent: Partitions = Field(
        default=(),
        description="frames mode: values of the client frames' 'op' field that are safe to resend when a "
        "backend died before answering (others get an unknown_outcome error frame).",
    )
    send_acks: StrictBool = Field(
        default=False,
        description="frames mode, dialect envelope: attach sessions with requires_ack and send the servers ack "
        "envelopes once the state they reported is durable in the partition store (docs/frames.md).",
    )
    plain_rules: tuple[dict[str, Any], ...] = Field(
        default=(),
        description="dialect plain: rules that classify client frames into recorded partitions "
        "(match, partition, compaction, key, replies, max_frames, max_bytes, overflow; docs/plain.md).",
    )
    plain_default_replies: StrictInt = Field(
        default=1,
        ge=0,
        description="dialect plain: server frames per client frame that matches no rule.",
    )
    plain_greeting_frames: StrictInt = Field(
        default=0,
        ge=0,
        description="dialect plain: frames a server sends by itself right after a connection opens.",
    )
    servers: tuple[Server, ...] = Field(min_length=1, description="The pool's servers; at least one.")

    _plain_ruleset: _Derived | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _acks_need_envelope(self) -> Pool:
        if self.send_acks and self.dialect != "envelope":
            _raise_at("Pool", [(("send_acks",), "needs dialect envelope: plain servers take no ack envelopes")], [True])
        return self

    @model_validator(mode="after")
    def _plain_rules_valid(self) -> Pool:
        from replay.plain import RuleError, RuleSet

        try:
            ruleset = RuleSet.from_config(list(self.plain_rules), default_replies=self.plain_default_replies)
        except RuleError as exc:
            _raise_at(
                "Pool",
                [(("plain_rules", *p.loc), p.message) for p in exc.problems],
                [_value_at(self.plain_rules, p.loc) for p in exc.problems],
            )
        else:
            self._plain_ruleset = _Derived(ruleset)
        return self

    def plain_ruleset(self) -> Any:
        """The pool's ``plain_rules`` as a :class:`replay.plain.RuleSet` (built once, when validated)."""
        derived = self._plain_ruleset
        assert derived is not None, "a Pool built without validation"
        return derived.value

    def requires_of(self, server: Server) -> tuple[str, ...]:
        """The partitions ``server`` needs: its own list, or else the pool's."""
        return server.effective_requires(self)

    def server(self, name: str) -> Server:
        """The server called ``name``; ``KeyError`` if there is none."""
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)


class Admin(_Model):
    """The admin HTTP API (JSON, Prometheus metrics, dashboard)."""

    bind: Bind = Field(
        default="127.0.0.1:7900",
        description="host:port of the admin API; keep it on loopback or a private net.",
    )
    token: Text | None = Field(
        default=None, description="Bearer token required by every mutating route; null refuses all mutations."
    )


class MetricsRetention(_Model):
    """How long the metrics store keeps each resolution."""

    raw_days: StrictInt = Field(default=7, ge=1, description="Days of raw per-interval samples.")
    minute_days: StrictInt = Field(default=3, ge=1, description="Days of per-minute rollups.")
    hour_days: StrictInt = Field(default=32, ge=1, description="Days of hourly rollups.")
    day_days: StrictInt = Field(default=90, ge=1, description="Days of daily rollups.")
    session_days: StrictInt = Field(default=90, ge=1, description="Days of per-session records.")


class MetricsSettings(_Model):
    """The metrics time-series store the learner writes and the admin API reads."""

    db_path: Text = Field(default="ferryman-metrics.sqlite3", description="SQLite file of the store.")
    interval_s: Annotated[Literal[1, 5, 60], BeforeValidator(_exact_int)] = Field(
        default=1, description="Sampling interval in seconds: 1, 5 or 60."
    )
    time_zone: TimeZone = Field(
        default="UTC", description="IANA time zone in which hour and day rollups are cut."
    )
    lateness_s: SecondsOrZero = Field(
        default=5.0, description="How late a sample may arrive before its interval is rolled up without it."
    )
    retention: MetricsRetention = Field(
        default_factory=lambda: MetricsRetention(), description="Retention per resolution."
    )
    models: StrictBool = Field(
        default=True,
        description="Run the online models (per-connection scores, forecasts) in the learner; false stores "
        "metrics only.",
    )
    max_scored_connections: StrictInt = Field(
        default=100_000, ge=1, description="Connections the models track at most (bounds the learner's memory)."
    )


class StoreSettings(_Model):
    """The session-state partition store (session -> partition -> key -> value)."""

    kind: Literal["local", "memory"] = Field(
        default="local",
        description="local: append-only segments plus snapshots in `directory`, recovered on restart; "
        "memory: nothing survives a restart.",
    )
    directory: Text = Field(default="ferryman-state", description="Directory of the local store's files.")
    fsync: Literal["always", "batch", "off"] = Field(
        default="batch",
        description="always: fsync every group commit; batch: at most every 50 ms; off: leave it to the OS.",
    )
    ttl_s: Seconds = Field(default=3600.0, description="Sessions idle this long are expired.")


class UsageSettings(_Model):
    """Usage reporting: per-client, per-resource daily counts built from the access log."""

    schedule: StrictBool = Field(
        default=False, description="Run the daily job inside the proxy shortly after local midnight."
    )
    time_zone: TimeZone = Field(default="UTC", description="IANA time zone that decides where a day starts.")
    input: Text | None = Field(
        default=None, description="Access-log path to read; null means global.access_log."
    )
    output_dir: Text = Field(default="usage", description="Directory for the daily and monthly reports.")
    source: Text = Field(default="ferryman", description="Source name written into the reports.")
    session_timeout_s: StrictInt = Field(
        default=1800, ge=1, description="A client's session ends after this many seconds without requests."
    )
    double_click_window_s: StrictInt = Field(
        default=30, ge=0, description="Repeats of the same request within this many seconds count once."
    )
    retention_days: StrictInt = Field(default=400, ge=1, description="Days of reports kept in output_dir.")
    metadata: Text | None = Field(
        default=None, description="Optional path to client metadata joined into the reports."
    )


_PORT_RANGE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")
_TEMPLATE_FIELD = re.compile(r"{([^{}]*)}")
_TEMPLATE_FIELDS = ("port", "name", "host", "python")


def _check_port_range(text: str) -> str:
    match = _PORT_RANGE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a port range such as 9100-9199 (got {text!r})")
    first, last = int(match[1]), int(match[2])
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"need 1 <= first <= last <= 65535 (got {text!r})")
    return text


def port_range(text: str | None) -> range | None:
    """``"9100-9199"`` -> ``range(9100, 9200)``; None stays None (the kernel picks the ports)."""
    if text is None:
        return None
    first, _, last = text.partition("-")
    return range(int(first), int(last) + 1)


def _check_command(args: tuple[str, ...]) -> tuple[str, ...]:
    for arg in args:
        for field in _TEMPLATE_FIELD.findall(arg):
            if field not in _TEMPLATE_FIELDS:
                raise ValueError(
                    f"unknown field {{{field}}} in {arg!r} (known: {', '.join('{' + f + '}' for f in _TEMPLATE_FIELDS)})"
                )
    if args and not any("{port}" in arg for arg in args):
        raise ValueError("must contain {port}: the server must listen where it is told")
    return args


DEMO_BACKEND_COMMAND = ("{python}", "-m", "proxy", "demo-backend", "--port", "{port}", "--name", "{name}")


class ProvisionerSettings(_Model):
    """How the scaler obtains servers: a standby list (static) or local processes (process)."""

    kind: Literal["process", "static"] = Field(
        default="process",
        description="process: one local process per server from `command`; static: hand out `standby` servers "
        "that already run.",
    )
    command: Annotated[tuple[Text, ...], AfterValidator(_check_command)] = Field(
        default=DEMO_BACKEND_COMMAND,
        description="process: the server's command line, one argument per item; {port}, {name}, {host} and "
        "{python} (the proxy's interpreter) are replaced.",
    )
    host: Text = Field(
        default="127.0.0.1", description="process: the address the servers listen on and are reached at."
    )
    ports: Annotated[StrictStr, AfterValidator(_check_port_range)] | None = Field(
        default=None,
        description="process: port range reserved for the servers, e.g. 9100-9199; null lets the kernel pick "
        "free ports.",
    )
    ready_timeout_s: Seconds = Field(
        default=30.0, description="process: a server that does not accept connections by then fails to start."
    )
    stop_timeout_s: Seconds = Field(
        default=10.0, description="process: time between SIGTERM and SIGKILL when a server is stopped."
    )
    log_dir: Text | None = Field(
        default=None, description="process: directory of one log file per server (stdout and stderr); null: "
        "discarded.",
    )
    standby: Annotated[tuple[Address, ...], AfterValidator(_check_unique)] = Field(
        default=(),
        description="static: host:port of servers that already run, handed out in order; stopped ones go back "
        "to the end of the list.",
    )
    check_connect: StrictBool = Field(
        default=True, description="static: hand out only standby servers that accept a TCP connection."
    )

    @model_validator(mode="after")
    def _kind_needs(self) -> ProvisionerSettings:
        if self.kind == "static" and not self.standby:
            _raise_at("ProvisionerSettings", [(("standby",), "kind static needs at least one standby server")])
        if self.kind == "process" and not self.command:
            _raise_at("ProvisionerSettings", [(("command",), "kind process needs a command")])
        return self


Ratio = Annotated[float, Strict(), Field(ge=0, le=1)]


class ScaleSettings(_Model):
    """Predictive scaling of one pool: when to add and remove servers, and how to get them (docs/scaling.md)."""

    pool: Name = Field(description="The pool the scaler manages (its configured servers count as the scaler's).")
    provisioner: ProvisionerSettings = Field(
        default_factory=lambda: ProvisionerSettings(), description="How servers are obtained."
    )
    forecast_only: StrictBool = Field(
        default=False,
        description="Record every decision (GET /scaling) without acting on it: watch before letting it act.",
    )
    capacity: Annotated[float, Strict()] = Field(
        default=1000.0,
        gt=0,
        description="Load one server takes at its limit: client frames per step (step_s) forwarded to it.",
    )
    step_s: Seconds = Field(
        default=60.0,
        description="Time between two decisions, and the unit of capacity and of the loads; the learner's "
        "forecast step is 60 s.",
    )
    target_utilization: Annotated[float, Strict()] = Field(
        default=0.7, gt=0, le=1, description="Share of capacity a server is sized for (1 - headroom)."
    )
    min_servers: StrictInt = Field(
        default=1, ge=0, description="Fewest servers (ready + provisioning); a smaller fleet is grown at once."
    )
    max_servers: StrictInt = Field(
        default=20, ge=1, description="Most servers (ready + provisioning); >= min_servers."
    )
    initial_lead_time_s: SecondsOrZero = Field(
        default=120.0, description="Provisioning time assumed until one has been measured."
    )
    lead_time_quantile: Ratio = Field(
        default=0.9, description="Lead time = this quantile of the last lead_time_samples provisioning times."
    )
    lead_time_samples: StrictInt = Field(
        default=20, ge=2, description="Provisioning times the lead time is measured over."
    )
    forecast_cap_factor: Annotated[float, Strict()] = Field(
        default=3.0, ge=1, description="Demand is never above this times the largest load seen."
    )
    band_weight: Ratio = Field(
        default=1.0, description="Demand from mid + band_weight * (hi - mid) of the forecast: 1 sizes for the "
        "upper band.",
    )
    scale_out_cooldown_s: SecondsOrZero = Field(
        default=60.0, description="Between two scale-outs (doubled after each failed provisioning, up to 32x)."
    )
    scale_in_cooldown_s: SecondsOrZero = Field(
        default=300.0, description="After any scale action, before a scale-in."
    )
    scale_in_stabilization_s: SecondsOrZero = Field(
        default=600.0, description="The load must allow a scale-in for this long before one happens."
    )
    scale_in_max_fraction: Annotated[float, Strict()] = Field(
        default=0.5, gt=0, le=1, description="Share of the ready servers drained per scale-in (at least one)."
    )
    history_steps: StrictInt = Field(
        default=1440, ge=2, description="Steps of history the thresholds are derived from."
    )
    imbalance_quantile: Ratio = Field(
        default=0.9, description="Quantile of the servers' load over the fleet mean that lowers the upper "
        "threshold.",
    )
    max_imbalance: Annotated[float, Strict()] = Field(
        default=1.25, ge=1, description="Upper bound of that imbalance correction."
    )
    volatility_quantile: Ratio = Field(
        default=0.5, description="Quantile of the step-to-step load change that sets the dead band."
    )
    hysteresis_min: Annotated[float, Strict()] = Field(
        default=0.05, ge=0, lt=1, description="Narrowest dead band between the thresholds (share of upper)."
    )
    hysteresis_max: Annotated[float, Strict()] = Field(
        default=0.15, ge=0, lt=1, description="Widest dead band between the thresholds; >= hysteresis_min."
    )
    trend_steps: StrictInt = Field(
        default=5, ge=2, description="Steps the reactive fallback fits its trend on."
    )
    migrations_per_s: Annotated[float, Strict()] = Field(
        default=50.0,
        ge=0,
        description="Connections moved per second onto new servers or off draining ones (token bucket).",
    )
    drain_timeout_s: SecondsOrZero = Field(
        default=300.0, description="A draining server is stopped after this even if connections remain."
    )
    decisions_kept: StrictInt = Field(default=50, ge=2, description="Decisions GET /scaling shows.")
    name_prefix: Name = Field(
        default="scale-",
        description="Names of the servers the scaler starts: prefix + a number; the pool's configured servers "
        "must not use it.",
    )
    provision_timeout_s: Seconds = Field(
        default=600.0, description="A server start that takes longer is cancelled and counts as failed."
    )

    @model_validator(mode="after")
    def _pairs(self) -> ScaleSettings:
        problems: list[tuple[Loc, str]] = []
        if self.max_servers < self.min_servers:
            if "max_servers" in self.model_fields_set:
                problems.append((("max_servers",), f"must be at least min_servers ({self.min_servers})"))
            else:
                problems.append((("min_servers",), f"must be at most max_servers ({self.max_servers})"))
        if self.hysteresis_max < self.hysteresis_min:
            if "hysteresis_max" in self.model_fields_set:
                problems.append(
                    (("hysteresis_max",), f"must be at least hysteresis_min ({self.hysteresis_min:g})")
                )
            else:
                problems.append(
                    (("hysteresis_min",), f"must be at most hysteresis_max ({self.hysteresis_max:g})")
                )
        _raise_at("ScaleSettings", problems)
        return self

    def core_settings(self) -> Any:
        """The decision core's settings (``proxy.scale.core.ScaleSettings``) from this section."""
        from dataclasses import fields

        from proxy.scale.core import ScaleSettings as CoreSettings

        return CoreSettings(**{f.name: getattr(self, f.name) for f in fields(CoreSettings)})


class Config(_Model):
    """A ferryman configuration file."""

    global_: GlobalSettings = Field(
        default_factory=lambda: GlobalSettings(),
        alias="global",
        description="Process-wide settings; every key has a default.",
    )
    listeners: tuple[Listener, ...] = Field(
        min_length=1, description="Listening sockets; at least one, unique names."
    )
    pools: tuple[Pool, ...] = Field(min_length=1, description="Server pools; at least one, unique names.")
    admin: Admin | None = Field(
        default=None, description="Admin HTTP API; absent or null means no admin API."
    )
    metrics: MetricsSettings | None = Field(
        default=None, description="Metrics time-series store; absent or null means off."
    )
    usage: UsageSettings | None = Field(
        default=None, description="Usage reporting; absent or null means off."
    )
    store: StoreSettings | None = Field(
        default=None, description="Session-state partition store; absent or null means off."
    )
    scale: ScaleSettings | None = Field(
        default=None, description="Predictive scaling of one pool; absent or null means off."
    )

    _source: str = PrivateAttr(default="<memory>")

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        # The loader runs cross_check on the raw file itself (so these are reported even when other
        # fields are invalid); this keeps a Config built in code just as consistent.
        _raise_at("Config", cross_check(self.model_dump(by_alias=True)))
        return self

    @property
    def source(self) -> str:
        """The file this configuration was loaded from (``<memory>`` when built in code)."""
        return self._source

    def pool(self, name: str) -> Pool:
        """The pool called ``name``; ``KeyError`` if there is none."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain JSON-able data, with the admin token hidden."""
        data = self.model_dump(mode="json", by_alias=True)
        if data.get("admin") and data["admin"].get("token") is not None:
            data["admin"]["token"] = "***"
        for listener in data.get("listeners") or ():
            if listener.get("session_secret") is not None:
                listener["session_secret"] = "***"
        return data


# -- checks across sections ----------------------------------------------------------------------


def _names(items: Any, what: str, path: Loc, problems: list[tuple[Loc, str]]) -> set[str] | None:
    """Names of a list of named items, reporting repeats; None when some name could not be read."""
    if not isinstance(items, list | tuple):
        return None
    first: dict[str, int] = {}
    complete = True
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str):
            complete = False
            continue
        if name in first:
            problems.append(
                (
                    (*path, i, "name"),
                    f"duplicate {what} name {name!r} (already used by {path[-1]}[{first[name]}])",
                )
            )
        else:
            first[name] = i
    return set(first) if complete else None


def cross_check(data: Any) -> list[tuple[Loc, str]]:
    """Problems that span sections, as ``(location, message)`` pairs, from plain (unvalidated) data.

    Only values of the right type are looked at; anything else is left to the models, which report it.
    """
    problems: list[tuple[Loc, str]] = []
    if not isinstance(data, Mapping):
        return problems
    _names(data.get("listeners"), "listener", ("listeners",), problems)
    pools = data.get("pools")
    pool_names = _names(pools, "pool", ("pools",), problems)
    if isinstance(pools, list | tuple):
        for i, pool in enumerate(pools):
            if isinstance(pool, Mapping):
                _names(pool.get("servers"), "server", ("pools", i, "servers"), problems)
    listeners = data.get("listeners")
    if pool_names is not None and isinstance(listeners, list | tuple):
        known = ", ".join(sorted(pool_names)) or "none"
        for i, listener in enumerate(listeners):
            pool = listener.get("pool") if isinstance(listener, Mapping) else None
            if isinstance(pool, str) and pool not in pool_names:
                problems.append((("listeners", i, "pool"), f"no pool named {pool!r} (pools: {known})"))
    scale = data.get("scale")
    if isinstance(scale, Mapping) and isinstance(scale.get("pool"), str) and isinstance(pools, list | tuple):
        name = scale["pool"]
        index = next((i for i, p in enumerate(pools) if isinstance(p, Mapping) and p.get("name") == name), None)
        if index is None and pool_names is not None:
            known = ", ".join(sorted(pool_names)) or "none"
            problems.append((("scale", "pool"), f"no pool named {name!r} (pools: {known})"))
        elif index is not None:
            prefix = scale.get("name_prefix", "scale-")
            servers = pools[index].get("servers")
            if isinstance(prefix, str) and prefix and isinstance(servers, list | tuple):
                for j, server in enumerate(servers):
                    sname = server.get("name") if isinstance(server, Mapping) else None
                    if isinstance(sname, str) and sname.startswith(prefix):
                        problems.append(
                            (
                                ("pools", index, "servers", j, "name"),
                                f"names starting with {prefix!r} are the scaler's (scale.name_prefix)",
                            )
                        )
    usage = data.get("usage")
    if isinstance(usage, Mapping) and usage.get("schedule") is True and usage.get("input") is None:
        settings = data.get("global")
        access_log = settings.get("access_log") if isinstance(settings, Mapping) else None
        if access_log is None:
            problems.append(
                (
                    ("usage", "schedule"),
                    "the daily usage job needs an access log: set usage.input or global.access_log",
                )
            )
        elif access_log == "-":
            problems.append(
                (
                    ("usage", "schedule"),
                    "the daily usage job cannot read global.access_log '-' (stdout): set usage.input",
                )
            )
    return problems


# -- JSON schema ------------------------------------------------------------------------------------

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """JSON schema of the configuration file (pydantic's, with every field's description)."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    schema["title"] = "ferryman configuration"
    return {"$schema": SCHEMA_DIALECT, **schema}


def json_schema_text() -> str:
    """The schema as stable, indented text: the exact content of ``config/schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(json_schema_text())
