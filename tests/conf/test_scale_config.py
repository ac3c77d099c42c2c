"""The ``scale:`` section: defaults, the decision core's settings, and errors at their position."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.conf import ConfigInvalid, load_config_text
from proxy.conf.schema import DEMO_BACKEND_COMMAND, port_range
from proxy.scale.core import ScaleSettings as CoreSettings

# Lines are numbered for the expectations below: the scale section starts at line 10.
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


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config_text(text, "t.yaml")
    return [str(error) for error in info.value.errors]


def test_defaults_are_the_decision_core_defaults() -> None:
    config = load_config_text(BASE + "scale: {pool: game}\n")
    scale = config.scale
    assert scale is not None
    assert scale.core_settings() == CoreSettings()
    assert (scale.pool, scale.name_prefix, scale.provision_timeout_s) == ("game", "scale-", 600.0)
    p = scale.provisioner
    assert (p.kind, p.command, p.host, p.ports) == ("process", DEMO_BACKEND_COMMAND, "127.0.0.1", None)
    assert (p.ready_timeout_s, p.stop_timeout_s, p.log_dir, p.standby, p.check_connect) == (30.0, 10.0, None, (), True)
    assert load_config_text(BASE).scale is None


def test_every_core_setting_is_a_key_of_the_section() -> None:
    keys = {f.name: 2 if f.type == "int" else 0.5 for f in dataclasses.fields(CoreSettings)}
    keys.update(forecast_only=True, min_servers=1, max_servers=3, hysteresis_min=0.1, hysteresis_max=0.2)
    keys.update(forecast_cap_factor=2.5, max_imbalance=1.5)
    body = ", ".join(f"{k}: {str(v).lower()}" for k, v in keys.items())
    scale = load_config_text(BASE + f"scale: {{pool: game, {body}}}\n").scale
    assert scale is not None
    assert dataclasses.asdict(scale.core_settings()) == {k: keys[k] for k in keys}


def test_a_full_section_loads() -> None:
    text = BASE + (
        "scale:\n"  # 10
        "  pool: game\n"
        "  forecast_only: true\n"
        "  capacity: 6000\n"
        "  min_servers: 2\n"
        "  max_servers: 8\n"
        "  provisioner:\n"
        "    kind: process\n"
        "    command: ['{python}', '-m', 'proxy', 'demo-backend', '--port', '{port}', '--name', '{name}']\n"
        "    ports: 9100-9199\n"
        "    ready_timeout_s: 5\n"
    )
    scale = load_config_text(text).scale
    assert scale is not None
    core = scale.core_settings()
    assert (core.forecast_only, core.capacity, core.min_servers, core.max_servers) == (True, 6000.0, 2, 8)
    assert port_range(scale.provisioner.ports) == range(9100, 9200)
    static = load_config_text(
        BASE + "scale: {pool: game, provisioner: {kind: static, standby: ['127.0.0.1:9101', '[::1]:9102']}}\n"
    ).scale
    assert static is not None and static.provisioner.standby == ("127.0.0.1:9101", "[::1]:9102")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("scale: {pool: game, capacity: 0}", "10:31: scale.capacity: must be greater than 0 (got 0)"),
        ("scale: {pool: game, target_utilization: 1.5}", "10:41: scale.target_utilization: must be at most 1 (got 1.5)"),
        ("scale: {pool: game, min_servers: -1}", "10:34: scale.min_servers: must be at least 0 (got -1)"),
        ("scale: {pool: game, max_servers: 0}", "10:34: scale.max_servers: must be at least 1 (got 0)"),
        ("scale: {pool: game, min_servers: 4, max_servers: 3}", "10:50: scale.max_servers: must be at least min_servers (4)"),
        ("scale: {pool: game, min_servers: 30}", "10:34: scale.min_servers: must be at most max_servers (20)"),
        ("scale: {pool: game, hysteresis_min: 0.3}", "10:37: scale.hysteresis_min: must be at most hysteresis_max (0.15)"),
        ("scale: {pool: game, hysteresis_max: 1}", "10:37: scale.hysteresis_max: must be less than 1 (got 1)"),
        ("scale: {pool: game, lead_time_quantile: 2}", "10:41: scale.lead_time_quantile: must be at most 1 (got 2)"),
        ("scale: {pool: game, trend_steps: 1}", "10:34: scale.trend_steps: must be at least 2 (got 1)"),
        ("scale: {pool: game, scale_in_cooldown_s: -5}", "10:42: scale.scale_in_cooldown_s: must be at least 0 (got -5)"),
        ("scale: {pool: game, forecast_only: 'yes'}", "10:36: scale.forecast_only: expected true or false (got 'yes')"),
        ("scale: {pool: gmae}", "10:15: scale.pool: no pool named 'gmae' (pools: game)"),
        ("scale: {pool: game, colour: red}", "10:21: scale.colour: unknown key 'colour'"),
        ("scale: {capacity: 5}", "10:8: scale.pool: required key 'pool' is missing"),
        ("scale: {pool: game, provisioner: {kind: cloud}}", "10:41: scale.provisioner.kind: must be 'process' or 'static' (got 'cloud')"),
        ("scale: {pool: game, provisioner: {kind: static}}", "10:34: scale.provisioner.standby: kind static needs at least one standby server"),
        ("scale: {pool: game, provisioner: {ports: 9200-9100}}", "10:42: scale.provisioner.ports: need 1 <= first <= last <= 65535 (got '9200-9100')"),
        ("scale: {pool: game, provisioner: {ports: '9100'}}", "10:42: scale.provisioner.ports: expected a port range such as 9100-9199 (got '9100')"),
        ("scale: {pool: game, provisioner: {command: [srv, --listen, '{host}']}}", "10:44: scale.provisioner.command: must contain {port}: the server must listen where it is told"),
        ("scale: {pool: game, provisioner: {command: [srv, '{prot}']}}", "10:44: scale.provisioner.command: unknown field {prot} in '{prot}' (known: {port}, {name}, {host}, {python})"),
        ("scale: {pool: game, provisioner: {kind: static, standby: ['127.0.0.1:0']}}", "10:59: scale.provisioner.standby[0]: port 0 cannot be connected to (it means 'any free port' only for a bind)"),
    ],
)  # fmt: skip
def test_invalid_values_are_reported_at_their_position(section: str, message: str) -> None:
    assert errors_of(BASE + section + "\n") == [f"t.yaml:{message}"]


def test_scaler_names_are_reserved_in_the_scaled_pool() -> None:
    text = BASE.replace("name: s1", "name: scale-1") + "scale: {pool: game}\n"
    assert errors_of(text) == [
        "t.yaml:8:15: pools[0].servers[0].name: names starting with 'scale-' are the scaler's (scale.name_prefix)"
    ]
    assert load_config_text(text.replace("{pool: game}", "{pool: game, name_prefix: auto-}")).scale is not None
