"""The configuration layer: file format, positions of errors, cross references, schema and examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from proxy.conf import (
    Admin,
    Config,
    ConfigError,
    ConfigInvalid,
    GlobalSettings,
    HealthCheck,
    Listener,
    MetricsSettings,
    Pool,
    ProvisionerSettings,
    ScaleSettings,
    Server,
    StoreSettings,
    UsageSettings,
    json_schema,
    json_schema_text,
    load_config,
    load_config_text,
    parse_hostport,
)
from proxy.conf.schema import MetricsRetention

ROOT = Path(__file__).resolve().parents[2]

# DESIGN.md section 9, copied by hand: the file must keep exactly this text and meaning.
MINIMAL = """\
listeners:
  - name: play
    bind: 127.0.0.1:7000
    mode: tcp            # or frames
    pool: game
pools:
  - name: game
    dialect: envelope    # frames mode only; or plain
    requires: [auth, game]
    servers:
      - {name: s1, address: 127.0.0.1:9001}
      - {name: s2, address: 127.0.0.1:9002, requires: [auth, game, cart]}
admin:
  bind: 127.0.0.1:7900
  token: change-me
"""

# Lines are numbered for the expectations below.
BASE = """\
listeners:
  - name: play
    bind: 127.0.0.1:7000
    pool: game
pools:
  - name: game
    servers:
      - name: s1
        address: 127.0.0.1:9001
"""


def errors_of(text: str, filename: str = "t.yaml") -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config_text(text, filename)
    return [str(error) for error in info.value.errors]


def with_listener_line(line: str) -> str:
    """BASE plus one more key in the listener, at line 5, column 5."""
    lines = BASE.splitlines(keepends=True)
    return "".join([*lines[:4], f"    {line}\n", *lines[4:]])


def with_pool_line(line: str) -> str:
    """BASE plus one more key in the pool, at line 7, column 5."""
    lines = BASE.splitlines(keepends=True)
    return "".join([*lines[:6], f"    {line}\n", *lines[6:]])


# -- the shipped files ------------------------------------------------------------------------------


def test_minimal_file_is_the_documented_one_and_keeps_its_meaning() -> None:
    path = ROOT / "config" / "minimal.yaml"
    assert path.read_text() == MINIMAL
    config = load_config(path)
    assert config.source == str(path)
    (listener,) = config.listeners
    assert (listener.name, listener.bind, listener.mode, listener.pool) == (
        "play",
        "127.0.0.1:7000",
        "tcp",
        "game",
    )
    (pool,) = config.pools
    assert (pool.name, pool.dialect, pool.requires) == ("game", "envelope", ("auth", "game"))
    s1, s2 = pool.servers
    assert (s1.name, s1.address, s1.requires) == ("s1", "127.0.0.1:9001", None)
    assert pool.requires_of(s1) == ("auth", "game")
    assert s2.effective_requires(pool) == ("auth", "game", "cart")
    assert config.admin == Admin(bind="127.0.0.1:7900", token="change-me")
    assert config.metrics is None and config.usage is None
    assert config.global_ == GlobalSettings()


def raw_sections(data: dict[str, Any]) -> list[tuple[type[BaseModel], dict[str, Any]]]:
    pool = data["pools"][0]
    return [
        (GlobalSettings, data["global"]),
        (Listener, data["listeners"][0]),
        (Pool, pool),
        (HealthCheck, pool["health_check"]),
        (Server, pool["servers"][0]),
        (Admin, data["admin"]),
        (MetricsSettings, data["metrics"]),
        (MetricsRetention, data["metrics"]["retention"]),
        (UsageSettings, data["usage"]),
        (StoreSettings, data["store"]),
        (ScaleSettings, data["scale"]),
        (ProvisionerSettings, data["scale"]["provisioner"]),
    ]


def test_example_file_is_valid_and_shows_every_key_with_its_default() -> None:
    path = ROOT / "config" / "example.yaml"
    config = load_config(path)
    assert [listener.name for listener in config.listeners] == ["play", "play-frames"]
    assert config.pool("game").server("s2").requires == ("auth", "game", "cart")
    data = yaml.safe_load(path.read_text())
    assert set(data) == {"global", "listeners", "pools", "admin", "metrics", "usage", "store", "scale"}
    for model, raw in raw_sections(data):
        keys = [field.alias or name for name, field in model.model_fields.items()]
        assert sorted(raw) == sorted(keys), model.__name__
        for name, field in model.model_fields.items():
            if field.is_required():
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                continue  # a nested section, compared on its own
            expected = list(default) if isinstance(default, tuple) else default
            assert raw[field.alias or name] == expected, f"{model.__name__}.{name}"


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "config" / "schema.json").read_text()
    assert committed == json_schema_text(), (
        "config/schema.json is stale; regenerate it with `python -m proxy.conf.schema > config/schema.json`"
    )


def test_schema_module_prints_the_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "proxy.conf.schema"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == json_schema_text()


def test_schema_describes_every_field_under_its_file_name() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["listeners", "pools"]
    assert list(schema["properties"]) == [
        "global", "listeners", "pools", "admin", "metrics", "usage", "store", "scale",
    ]  # fmt: skip
    assert set(schema["$defs"]["Listener"]["properties"]) == {
        "name", "bind", "mode", "pool", "max_connections", "backlog", "accept_proxy",
        "proxy_header_timeout_s", "idle_timeout_s", "frame_header_bytes", "frame_byteorder", "max_frame_bytes",
        "session_field", "session_secret", "session_token_field", "max_buffered_bytes",
    }  # fmt: skip
    assert set(schema["$defs"]["Pool"]["properties"]) == {
        "name", "balance", "hash_key", "hash_balance_factor", "dialect", "requires", "connect_timeout_s",
        "connect_retries", "send_proxy", "health_check", "migration_timeout_s", "migrations_per_s", "idempotent",
        "send_acks", "plain_rules", "plain_default_replies", "plain_greeting_frames", "servers",
    }  # fmt: skip
    assert schema["$defs"]["Pool"]["additionalProperties"] is False
    undescribed = [
        f"{owner}.{name}"
        for owner, section in [("Config", schema), *schema["$defs"].items()]
        for name, prop in section["properties"].items()
        if not prop.get("description")
    ]
    assert undescribed == []
    assert json_schema_text().endswith("}\n") and json.loads(json_schema_text()) == schema


# -- defaults ---------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    config = load_config_text(BASE)
    assert config.source == "<string>"
    g = config.global_
    assert (g.loop, g.drain_timeout_s, g.tick_s, g.log_level, g.log_file, g.access_log) == (
        "auto", 30.0, 1.0, "info", "-", None,
    )  # fmt: skip
    assert (g.high_water_bytes, g.low_water_bytes) == (262144, 65536)
    listener = config.listeners[0]
    assert (listener.mode, listener.max_connections, listener.backlog, listener.accept_proxy) == (
        "tcp",
        10000,
        1024,
        False,
    )
    assert (listener.proxy_header_timeout_s, listener.idle_timeout_s) == (3.0, 600.0)
    pool = config.pools[0]
    assert (pool.balance, pool.hash_key, pool.hash_balance_factor, pool.dialect, pool.requires) == (
        "consistent", "client_ip", 1.25, "envelope", (),
    )  # fmt: skip
    assert (pool.connect_timeout_s, pool.connect_retries, pool.send_proxy) == (5.0, 2, "none")
    hc = pool.health_check
    assert (hc.enabled, hc.interval_s, hc.timeout_s, hc.rise, hc.fall) == (True, 2.0, 1.0, 2, 3)
    server = pool.servers[0]
    assert (server.requires, server.state) == (None, "ready")
    assert config.admin is None and config.metrics is None and config.usage is None
    admin = load_config_text(BASE + "admin: {}\n").admin
    assert admin == Admin() and (admin.bind, admin.token) == ("127.0.0.1:7900", None)
    metrics = load_config_text(BASE + "metrics: {}\n").metrics
    assert metrics is not None
    assert (metrics.db_path, metrics.interval_s, metrics.time_zone, metrics.lateness_s) == (
        "ferryman-metrics.sqlite3", 1, "UTC", 5.0,
    )  # fmt: skip
    r = metrics.retention
    assert (r.raw_days, r.minute_days, r.hour_days, r.day_days, r.session_days) == (7, 3, 32, 90, 90)
    usage = load_config_text(BASE + "usage: {}\n").usage
    assert usage is not None
    assert (usage.schedule, usage.time_zone, usage.input, usage.output_dir, usage.source) == (
        False, "UTC", None, "usage", "ferryman",
    )  # fmt: skip
    assert (usage.session_timeout_s, usage.double_click_window_s, usage.retention_days, usage.metadata) == (
        1800, 30, 400, None,
    )  # fmt: skip


# -- errors, one kind at a time -----------------------------------------------------------------------


def test_unknown_key_is_reported_at_the_key() -> None:
    assert errors_of(with_pool_line("colour: blue")) == ["t.yaml:7:5: pools[0].colour: unknown key 'colour'"]
    assert errors_of(with_pool_line("balnce: least_conn")) == [
        "t.yaml:7:5: pools[0].balnce: unknown key 'balnce' (did you mean 'balance'?)"
    ]
    assert errors_of(BASE + "listener: []\n") == [
        "t.yaml:10:1: listener: unknown key 'listener' (did you mean 'listeners'?)"
    ]


def test_duplicate_key_is_reported_at_its_second_occurrence() -> None:
    assert errors_of(with_listener_line("bind: 127.0.0.1:7001")) == [
        "t.yaml:5:5: listeners[0].bind: duplicate key 'bind' (first defined at line 3, column 5)"
    ]
    assert errors_of(BASE + "pools: []\n") == [
        "t.yaml:10:1: pools: duplicate key 'pools' (first defined at line 5, column 1)"
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_connections: lots", "listeners[0].max_connections: expected an integer (got 'lots')"),
        ('max_connections: "100"', "listeners[0].max_connections: expected an integer (got '100')"),
        ("max_connections: 1.5", "listeners[0].max_connections: expected an integer (got 1.5)"),
        ("accept_proxy: 1", "listeners[0].accept_proxy: expected true or false (got 1)"),
        ("accept_proxy: 'yes'", "listeners[0].accept_proxy: expected true or false (got 'yes')"),
        ("idle_timeout_s: soon", "listeners[0].idle_timeout_s: expected a number (got 'soon')"),
        ("idle_timeout_s: true", "listeners[0].idle_timeout_s: expected a number (got true)"),
    ],
)
def test_wrong_type(line: str, message: str) -> None:
    column = 4 + len(line.split(":")[0]) + 2 + 1  # indent, key, ": ", then 1-based
    assert errors_of(with_listener_line(line)) == [f"t.yaml:5:{column}: {message}"]


def test_wrong_type_of_section() -> None:
    text = BASE.replace(
        "    servers:\n      - name: s1\n        address: 127.0.0.1:9001\n", "    servers: {name: s1}\n"
    )
    assert errors_of(text) == ["t.yaml:7:14: pools[0].servers: expected a list (got a mapping)"]
    assert errors_of(BASE + "global: [1]\n") == ["t.yaml:10:9: global: expected a mapping (got a list)"]
    assert errors_of(BASE + "global:\n") == ["t.yaml:10:8: global: expected a mapping (got null)"]
    assert errors_of(BASE.replace("name: play", "name: 7")) == [
        "t.yaml:2:11: listeners[0].name: expected a string (got 7)"
    ]
    assert errors_of(with_pool_line("requires: auth")) == [
        "t.yaml:7:15: pools[0].requires: expected a list (got 'auth')"
    ]
    assert errors_of(
        "listeners: {}\n"
        + BASE[len("listeners:\n  - name: play\n    bind: 127.0.0.1:7000\n    pool: game\n") :]
    ) == ["t.yaml:1:12: listeners: expected a list (got an empty mapping)"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("global: {drain_timeout_s: 0}", "10:27: global.drain_timeout_s: must be greater than 0 (got 0)"),
        ("global: {tick_s: -1.5}", "10:18: global.tick_s: must be greater than 0 (got -1.5)"),
        ("global: {tick_s: .inf}", "10:18: global.tick_s: must be a finite number (got inf)"),
        (
            "global: {high_water_bytes: 512}",
            "10:28: global.high_water_bytes: must be at least 1024 (got 512)",
        ),
        (
            "global: {low_water_bytes: 262144}",
            "10:27: global.low_water_bytes: must be less than high_water_bytes (262144)",
        ),
        (
            "global: {high_water_bytes: 4096}",
            "10:28: global.high_water_bytes: must be greater than low_water_bytes (65536)",
        ),
        ("metrics: {lateness_s: -1}", "10:23: metrics.lateness_s: must be at least 0 (got -1)"),
        (
            "metrics: {retention: {raw_days: 0}}",
            "10:33: metrics.retention.raw_days: must be at least 1 (got 0)",
        ),
        ("usage: {retention_days: 0}", "10:25: usage.retention_days: must be at least 1 (got 0)"),
    ],
)
def test_out_of_range(section: str, message: str) -> None:
    assert errors_of(BASE + section + "\n") == [f"t.yaml:{message}"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_connections: 0", "5:22: listeners[0].max_connections: must be at least 1 (got 0)"),
        ("backlog: -5", "5:14: listeners[0].backlog: must be at least 1 (got -5)"),
        ("idle_timeout_s: -1", "5:21: listeners[0].idle_timeout_s: must be at least 0 (got -1)"),
    ],
)
def test_out_of_range_in_listener(line: str, message: str) -> None:
    assert errors_of(with_listener_line(line)) == [f"t.yaml:{message}"]


def test_out_of_range_in_pool() -> None:
    assert errors_of(with_pool_line("hash_balance_factor: 0.5")) == [
        "t.yaml:7:26: pools[0].hash_balance_factor: must be at least 1 (got 0.5)"
    ]
    assert errors_of(with_pool_line("connect_retries: -1")) == [
        "t.yaml:7:22: pools[0].connect_retries: must be at least 0 (got -1)"
    ]
    assert errors_of(with_pool_line("health_check: {interval_s: 1, timeout_s: 1.5}")) == [
        "t.yaml:7:46: pools[0].health_check.timeout_s: must be at most interval_s (1)"
    ]
    assert errors_of(with_pool_line("health_check: {interval_s: 0.5}")) == [
        "t.yaml:7:32: pools[0].health_check.interval_s: must be at least timeout_s (1)"
    ]
    assert errors_of(with_pool_line("health_check: {rise: 0, fall: 0}")) == [
        "t.yaml:7:26: pools[0].health_check.rise: must be at least 1 (got 0)",
        "t.yaml:7:35: pools[0].health_check.fall: must be at least 1 (got 0)",
    ]


def test_send_acks_is_off_by_default_and_needs_the_envelope_dialect() -> None:
    assert load_config_text(BASE).pools[0].send_acks is False
    assert load_config_text(with_pool_line("send_acks: true")).pools[0].send_acks is True
    assert errors_of(with_pool_line("send_acks: true\n    dialect: plain")) == [
        "t.yaml:7:16: pools[0].send_acks: needs dialect envelope: plain servers take no ack envelopes"
    ]
    assert errors_of(with_pool_line("send_acks: 1")) == ["t.yaml:7:16: pools[0].send_acks: expected true or false (got 1)"]


def test_bad_enum() -> None:
    assert errors_of(with_listener_line("mode: udp")) == [
        "t.yaml:5:11: listeners[0].mode: must be 'tcp' or 'frames' (got 'udp')"
    ]
    assert errors_of(with_pool_line("balance: random")) == [
        "t.yaml:7:14: pools[0].balance: must be 'consistent', 'round_robin' or 'least_conn' (got 'random')"
    ]
    assert errors_of(with_pool_line("send_proxy: null")) == [
        "t.yaml:7:17: pools[0].send_proxy: must be 'none', 'v1' or 'v2' (got null)"
    ]
    text = BASE.replace(
        "        address: 127.0.0.1:9001\n", "        address: 127.0.0.1:9001\n        state: down\n"
    )
    assert errors_of(text) == [
        "t.yaml:10:16: pools[0].servers[0].state: must be 'ready', 'drain' or 'maint' (got 'down')"
    ]
    assert errors_of(BASE + "metrics: {interval_s: 2}\n") == [
        "t.yaml:10:23: metrics.interval_s: must be 1, 5 or 60 (got 2)"
    ]
    assert errors_of(BASE + "metrics: {interval_s: true}\n") == [
        "t.yaml:10:23: metrics.interval_s: expected an integer (got true)"
    ]


def test_names_must_be_plain() -> None:
    assert errors_of(with_pool_line("requires: [auth, 'cart items', auth]")) == [
        "t.yaml:7:22: pools[0].requires[1]: must be a name made of letters, digits, '_', '.' and '-' (got 'cart items')"
    ]
    assert errors_of(with_pool_line("requires: [auth, cart, auth]")) == [
        "t.yaml:7:15: pools[0].requires: 'auth' is listed more than once"
    ]
    assert errors_of(BASE.replace("name: play", "name: ''")) == [
        "t.yaml:2:11: listeners[0].name: must be a name made of letters, digits, '_', '.' and '-' (got '')"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("game-1.internal.:9001", ("game-1.internal.", 9001)),
        ("[::1]:7000", ("::1", 7000)),
        ("[::]:80", ("::", 80)),
        ("[fe80::1%eth0]:443", ("fe80::1%eth0", 443)),
    ],
)
def test_parse_hostport_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "expected 'host:port', e.g. 127.0.0.1:7000 or [::1]:7000"),
        ("::1:7000", "an IPv6 address must be written in brackets, e.g. [::1]:7000"),
        (":7000", "missing host before ':port' (use 0.0.0.0 or [::] for every interface)"),
        ("host:", "missing port after ':'"),
        ("host:http", "port 'http' is not a number"),
        ("host:-1", "port '-1' is not a number"),
        ("host:65536", "port 65536 is out of range (0..65535)"),
        ("host:123456", "port '123456' is not a number"),
        ("[::1]7000", "expected ':port' after the bracketed IPv6 address, e.g. [::1]:7000"),
        ("[::1:7000", "missing ']' after the IPv6 address, e.g. [::1]:7000"),
        ("[10.0.0.1]:80", "'10.0.0.1' is not an IPv6 address"),
        ("300.1.1.1:80", "'300.1.1.1' is not a valid host name or IPv4 address"),
        ("-game:80", "'-game' is not a valid host name or IPv4 address"),
        ("a..b:80", "'a..b' is not a valid host name or IPv4 address"),
        ("host :80", "expected 'host:port' without spaces, e.g. 127.0.0.1:7000 or [::1]:7000"),
        ("", "expected 'host:port' without spaces, e.g. 127.0.0.1:7000 or [::1]:7000"),
    ],
)
def test_parse_hostport_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_hostport(text)
    assert str(info.value) == message


def test_bad_bind_and_address_in_the_file() -> None:
    text = BASE.replace("bind: 127.0.0.1:7000", "bind: 127.0.0.1:70000").replace(
        "address: 127.0.0.1:9001", "address: 127.0.0.1:0"
    )
    assert errors_of(text) == [
        "t.yaml:3:11: listeners[0].bind: port 70000 is out of range (0..65535)",
        "t.yaml:9:18: pools[0].servers[0].address: port 0 cannot be connected to (it means 'any free port' only for a bind)",
    ]
    assert errors_of(BASE.replace("bind: 127.0.0.1:7000", "bind: 7000")) == [
        "t.yaml:3:11: listeners[0].bind: expected a string (got 7000)"
    ]
    assert errors_of(BASE + "admin: {bind: 'localhost'}\n") == [
        "t.yaml:10:15: admin.bind: expected 'host:port', e.g. 127.0.0.1:7000 or [::1]:7000"
    ]


def test_missing_required_key_is_reported_at_the_enclosing_mapping() -> None:
    text = BASE.replace("    bind: 127.0.0.1:7000\n", "")
    assert errors_of(text) == ["t.yaml:2:5: listeners[0].bind: required key 'bind' is missing"]
    assert errors_of("# only a comment\nglobal: {}\n") == [
        "t.yaml:2:1: listeners: required key 'listeners' is missing",
        "t.yaml:2:1: pools: required key 'pools' is missing",
    ]
    text = BASE.replace(
        "    servers:\n      - name: s1\n        address: 127.0.0.1:9001\n", "    servers: []\n"
    )
    assert errors_of(text) == ["t.yaml:7:14: pools[0].servers: must have at least 1 item (got an empty list)"]


def test_dangling_pool_reference() -> None:
    assert errors_of(BASE.replace("pool: game", "pool: gmae")) == [
        "t.yaml:4:11: listeners[0].pool: no pool named 'gmae' (pools: game)"
    ]


def test_duplicate_names() -> None:
    text = """\
listeners:
  - {name: play, bind: 127.0.0.1:7000, pool: game}
  - {name: play, bind: 127.0.0.1:7001, pool: chat}
pools:
  - name: game
    servers: [{name: s1, address: 'a:1'}, {name: s1, address: 'b:1'}]
  - name: game
    servers: [{name: s1, address: 'a:1'}]
"""
    assert errors_of(text) == [
        "t.yaml:3:12: listeners[1].name: duplicate listener name 'play' (already used by listeners[0])",
        "t.yaml:3:46: listeners[1].pool: no pool named 'chat' (pools: game)",
        "t.yaml:6:50: pools[0].servers[1].name: duplicate server name 's1' (already used by servers[0])",
        "t.yaml:7:11: pools[1].name: duplicate pool name 'game' (already used by pools[0])",
    ]


def test_cross_references_are_checked_for_configs_built_in_code() -> None:
    pool = Pool(name="game", servers=(Server(name="s1", address="127.0.0.1:9001"),))
    Config(listeners=(Listener(name="l", bind="127.0.0.1:0", pool="game"),), pools=(pool,))
    with pytest.raises(ValidationError) as info:
        Config(listeners=(Listener(name="l", bind="127.0.0.1:0", pool="nope"),), pools=(pool,))
    (error,) = info.value.errors()
    assert error["loc"] == ("listeners", 0, "pool") and error["msg"] == "no pool named 'nope' (pools: game)"


def test_time_zones_are_checked() -> None:
    assert errors_of(BASE + "usage: {time_zone: Mars/Olympus}\n") == [
        "t.yaml:10:20: usage.time_zone: unknown time zone 'Mars/Olympus' (expected an IANA name such as UTC or Europe/Paris)"
    ]
    config = load_config_text(BASE + "metrics: {time_zone: Europe/Paris}\n")
    assert config.metrics is not None and config.metrics.time_zone == "Europe/Paris"


def test_scheduled_usage_needs_a_readable_access_log() -> None:
    assert errors_of(BASE + "usage: {schedule: true}\n") == [
        "t.yaml:10:19: usage.schedule: the daily usage job needs an access log: set usage.input or global.access_log"
    ]
    assert errors_of(BASE + "global: {access_log: '-'}\nusage: {schedule: true}\n") == [
        "t.yaml:11:19: usage.schedule: the daily usage job cannot read global.access_log '-' (stdout): set usage.input"
    ]
    load_config_text(BASE + "global: {access_log: access.log}\nusage: {schedule: true}\n")
    load_config_text(BASE + "usage: {schedule: true, input: access.log}\n")


# -- YAML-level problems --------------------------------------------------------------------------


def test_yaml_syntax_error_has_its_position() -> None:
    text = BASE.replace("bind: 127.0.0.1:7000", "bind: 127.0.0.1: 7000")
    assert errors_of(text) == [
        "t.yaml:3:20: -: YAML syntax error: mapping values are not allowed in this context"
    ]
    text = BASE.replace("  - name: game\n", "  - name: game\n   servers: []\n")
    assert errors_of(text) == [
        "t.yaml:7:4: -: YAML syntax error: did not find expected '-' indicator "
        "(while parsing a block collection started at line 6, column 3)"
    ]
    assert errors_of("listeners: [\n") == [
        "t.yaml:2:1: -: YAML syntax error: did not find expected node content "
        "(while parsing a flow node started at line 2, column 1)"
    ]


def test_yaml_reader_errors_have_their_position() -> None:
    assert errors_of("listeners: []\n# é\npools: \x07\n") == [
        "t.yaml:3:8: -: YAML syntax error: control characters are not allowed (U+0007)"
    ]


def test_empty_or_non_mapping_file() -> None:
    empty = ["t.yaml:1:1: -: the file is empty: expected a mapping with 'listeners' and 'pools'"]
    assert errors_of("") == empty
    assert errors_of("# nothing yet\n\n") == empty
    assert errors_of("\n- a\n- b\n") == [
        "t.yaml:2:1: -: the top level must be a mapping with 'listeners' and 'pools', not a list"
    ]
    assert errors_of("hello\n") == [
        "t.yaml:1:1: -: the top level must be a mapping with 'listeners' and 'pools', not the value 'hello'"
    ]
    assert errors_of("a: 1\n---\nb: 2\n") == [
        "t.yaml:2:1: -: YAML syntax error: expected a single document in the stream, but found another document"
    ]


def test_unsupported_tags_are_errors() -> None:
    assert errors_of(BASE + "admin: {token: !!binary aGk=}\n") == [
        "t.yaml:10:16: admin.token: unsupported YAML tag !!binary"
    ]
    assert errors_of(BASE + "admin: {token: !secret x}\n") == [
        "t.yaml:10:16: admin.token: unsupported YAML tag !secret"
    ]
    assert errors_of(BASE + "global: {backlog: !!int ten}\n") == [
        "t.yaml:10:10: global.backlog: unknown key 'backlog'",
        "t.yaml:10:19: global.backlog: 'ten' is not a valid integer",
    ]


def test_anchors_and_merge_keys() -> None:
    text = """\
listeners:
  - &play {name: a, bind: 127.0.0.1:7000, mode: frames, pool: game, max_connections: 5}
  - <<: *play
    name: b
    bind: 127.0.0.1:7001
    max_connections: 7
  - <<: [{name: c, backlog: 9}, *play]
    bind: 127.0.0.1:7002
pools: [{name: game, servers: [{name: s1, address: 'h:1'}]}]
"""
    a, b, c = load_config_text(text).listeners
    assert (a.name, a.mode, a.pool, a.max_connections) == ("a", "frames", "game", 5)
    assert (b.name, b.bind, b.mode, b.max_connections) == ("b", "127.0.0.1:7001", "frames", 7)
    assert (c.name, c.bind, c.backlog, c.max_connections) == ("c", "127.0.0.1:7002", 9, 5)
    # An error in a value that came from an anchor is reported where the anchor's value is written.
    bad = text.replace("max_connections: 5", "max_connections: 0")
    assert errors_of(bad) == [
        "t.yaml:2:86: listeners[0].max_connections: must be at least 1 (got 0)",
        "t.yaml:2:86: listeners[2].max_connections: must be at least 1 (got 0)",
    ]
    assert errors_of(BASE + "admin: {<<: 3}\n") == [
        "t.yaml:10:13: admin: '<<' merges only a mapping or a list of mappings"
    ]


def test_anchors_cannot_blow_up() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert errors_of("\n".join(lines) + "\n") == [
        "t.yaml:1:1: -: the document expands to more than 100000 values (check its aliases)"
    ]
    errors = errors_of("a: &loop [*loop]\n")
    assert errors[-1].startswith("t.yaml:1:4: a[0][0][0]") and errors[-1].endswith(
        ": nested more than 32 levels deep"
    )


# -- several errors at once -------------------------------------------------------------------------


def test_every_error_is_reported_at_once_in_file_order() -> None:
    text = """\
pools:
  - name: game
    balance: fastest
    servers:
      - {name: s1, address: nowhere}
      - {name: s2, address: '10.0.0.2:9002', weight: 3}
listeners:
  - name: play
    bind: 127.0.0.1:7000
    pool: games
    mode: tcp
    mode: frames
global:
  log_level: loud
  tick_s: 0
admin: {token: ''}
"""
    assert errors_of(text, "ferryman.yaml") == [
        "ferryman.yaml:3:14: pools[0].balance: must be 'consistent', 'round_robin' or 'least_conn' (got 'fastest')",
        "ferryman.yaml:5:29: pools[0].servers[0].address: expected 'host:port', e.g. 127.0.0.1:7000 or [::1]:7000",
        "ferryman.yaml:6:46: pools[0].servers[1].weight: unknown key 'weight'",
        "ferryman.yaml:10:11: listeners[0].pool: no pool named 'games' (pools: game)",
        "ferryman.yaml:12:5: listeners[0].mode: duplicate key 'mode' (first defined at line 11, column 5)",
        "ferryman.yaml:14:14: global.log_level: must be 'debug', 'info', 'warning' or 'error' (got 'loud')",
        "ferryman.yaml:15:11: global.tick_s: must be greater than 0 (got 0)",
        "ferryman.yaml:16:16: admin.token: must not be empty",
    ]


# -- loading from files, rendering, redaction, determinism ------------------------------------------


def test_load_config_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ferryman.yaml"
    path.write_text(BASE)
    assert load_config(path).source == str(path)
    path.write_text(BASE.replace("pool: game", "pool: nope"))
    with pytest.raises(ConfigInvalid) as info:
        load_config(str(path))
    assert [str(e) for e in info.value.errors] == [
        f"{path}:4:11: listeners[0].pool: no pool named 'nope' (pools: game)"
    ]
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())  # a byte-order mark is fine
    assert load_config(path).listeners[0].name == "play"
    path.write_bytes(b"listeners: []\npools: [\xff]\n")
    with pytest.raises(ConfigInvalid) as info:
        load_config(path)
    assert [str(e) for e in info.value.errors] == [f"{path}:2:9: -: not UTF-8 text (byte 0xff)"]
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_error_values_render_as_one_line_each() -> None:
    error = ConfigError("f.yaml", 3, 7, "pools[0].name", "bad")
    assert str(error) == "f.yaml:3:7: pools[0].name: bad"
    invalid = ConfigInvalid([error, ConfigError("f.yaml", 9, 1, "-", "worse")])
    assert str(invalid) == "f.yaml:3:7: pools[0].name: bad\nf.yaml:9:1: -: worse"
    with pytest.raises(AttributeError):
        error.line = 4  # type: ignore[misc]


def test_odd_keys_are_quoted_in_paths() -> None:
    assert errors_of(with_pool_line("'two words': 1")) == [
        "t.yaml:7:5: pools[0][\"two words\"]: unknown key 'two words'"
    ]


def test_redacted_hides_the_token() -> None:
    config = load_config_text(MINIMAL)
    data = config.redacted()
    assert data["admin"] == {"bind": "127.0.0.1:7900", "token": "***"}
    assert config.admin is not None and config.admin.token == "change-me"
    assert "change-me" not in json.dumps(data)
    assert data["pools"][0]["servers"][1]["requires"] == ["auth", "game", "cart"]
    assert data["global"]["drain_timeout_s"] == 30.0 and data["metrics"] is None
    assert Config.model_validate(data).admin == Admin(token="***")  # the effective config, re-loadable
    assert load_config_text(BASE + "admin: {}\n").redacted()["admin"] == {
        "bind": "127.0.0.1:7900",
        "token": None,
    }


def test_config_is_an_immutable_value() -> None:
    config = load_config_text(MINIMAL)
    with pytest.raises(ValidationError):
        config.pools[0].name = "other"  # type: ignore[misc]
    assert isinstance(config.pools, tuple) and isinstance(config.pools[0].requires, tuple)
    assert hash(config.pools[0]) == hash(load_config_text(MINIMAL).pools[0])


def test_loading_is_deterministic() -> None:
    example = (ROOT / "config" / "example.yaml").read_text()
    assert load_config_text(example, "e") == load_config_text(example, "e")
    assert load_config_text(example).redacted() == load_config_text(example).redacted()
    bad = BASE.replace("pool: game", "pool: x") + "global: {tick_s: 0, loop: fast}\n"
    assert errors_of(bad) == errors_of(bad)
    assert json_schema_text() == json_schema_text()
