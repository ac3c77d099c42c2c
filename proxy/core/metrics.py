"""Every metric ferryman exports, declared once (sans-IO).

Names follow Prometheus conventions: ``ferryman_`` prefix, base units (seconds, bytes), ``_total``
on counters.  Labels are bounded: listener, pool and server names come from the configuration, and
``status``/``state``/``result`` take values from fixed sets.  Client addresses and session ids never
appear in labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    kind: str  # counter | gauge
    help: str
    labels: tuple[str, ...]


METRICS: tuple[MetricDef, ...] = (
    MetricDef("ferryman_build_info", "gauge", "Build information; always 1.", ("version",)),
    MetricDef("ferryman_process_start_time_seconds", "gauge", "Start time of the process, Unix epoch seconds.", ()),
    MetricDef("ferryman_ready", "gauge", "1 while the proxy reports ready, 0 while starting or draining.", ()),
    MetricDef("ferryman_config_reloads_total", "counter", "Configuration reloads by result.", ("result",)),
    MetricDef("ferryman_config_last_reload_success", "gauge", "1 if the last reload succeeded.", ()),
    MetricDef("ferryman_listener_connections_total", "counter", "Client connections accepted.", ("listener",)),
    MetricDef(
        "ferryman_listener_rejected_connections_total",
        "counter",
        "Client connections refused because the listener was at max_connections.",
        ("listener",),
    ),
    MetricDef("ferryman_listener_active_connections", "gauge", "Client connections open now.", ("listener",)),
    MetricDef(
        "ferryman_listener_closed_connections_total",
        "counter",
        "Client connections ended, by how they ended (the access log's status).",
        ("listener", "status"),
    ),
    MetricDef("ferryman_listener_received_bytes_total", "counter", "Bytes received from clients.", ("listener",)),
    MetricDef("ferryman_listener_sent_bytes_total", "counter", "Bytes sent to clients.", ("listener",)),
    MetricDef("ferryman_server_up", "gauge", "1 if health checks consider the server up.", ("pool", "server")),
    MetricDef(
        "ferryman_server_admin_state",
        "gauge",
        "1 for the server's current admin state (ready, drain, maint), 0 for the others.",
        ("pool", "server", "state"),
    ),
    MetricDef(
        "ferryman_server_active_connections", "gauge", "Connections to the server open now.", ("pool", "server")
    ),
    MetricDef(
        "ferryman_server_connections_total", "counter", "Connections placed on the server.", ("pool", "server")
    ),
    MetricDef(
        "ferryman_server_connect_failures_total",
        "counter",
        "Failed connects to the server (each counts as a failed health observation).",
        ("pool", "server"),
    ),
    MetricDef(
        "ferryman_server_check_failures_total",
        "counter",
        "Failed health checks and passive failures.",
        ("pool", "server"),
    ),
    MetricDef("ferryman_server_sent_bytes_total", "counter", "Bytes sent to the server.", ("pool", "server")),
    MetricDef(
        "ferryman_server_received_bytes_total", "counter", "Bytes received from the server.", ("pool", "server")
    ),
    MetricDef(
        "ferryman_server_frames_total",
        "counter",
        "Client frames forwarded to the server (frames mode).",
        ("pool", "server"),
    ),
    MetricDef(
        "ferryman_server_acks_total",
        "counter",
        "Ack envelopes sent to the server: its reported state is durable (frames mode, send_acks).",
        ("pool", "server"),
    ),
    MetricDef("ferryman_pool_eligible_servers", "gauge", "Servers that are ready and up.", ("pool",)),
    MetricDef("ferryman_pool_servers", "gauge", "Servers configured in the pool.", ("pool",)),
    MetricDef(
        "ferryman_migrations_total",
        "counter",
        "Live migrations of frames connections by outcome: committed, rolled_back, aborted, deferred.",
        ("outcome",),
    ),
    MetricDef("ferryman_migrations_in_progress", "gauge", "Live migrations running now.", ()),
    MetricDef(
        "ferryman_migration_pause_seconds_sum", "counter", "Total client pause of committed migrations.", ()
    ),
    MetricDef("ferryman_migration_pause_seconds_count", "counter", "Migrations with a measured pause.", ()),
    MetricDef(
        "ferryman_migration_state_bytes_total",
        "counter",
        "Session-state bytes sent to migration targets: precopy (before the pause) or replay (during it).",
        ("phase",),
    ),
    MetricDef(
        "ferryman_migration_partitions_total",
        "counter",
        "Partitions of migrated sessions: present in the session, or replayed to the target.",
        ("kind",),
    ),
    MetricDef(
        "ferryman_migration_unknown_outcomes_total",
        "counter",
        "Requests answered with unknown_outcome because their server died before answering.",
        (),
    ),
    MetricDef("ferryman_learner_up", "gauge", "1 while the learner process runs.", ()),
    MetricDef("ferryman_learner_restarts_total", "counter", "Times the learner process was restarted.", ()),
    MetricDef("ferryman_learner_snapshots_sent_total", "counter", "Per-tick snapshots sent to the learner.", ()),
    MetricDef(
        "ferryman_learner_snapshots_dropped_total",
        "counter",
        "Per-tick snapshots dropped because the learner's pipe was full (the proxy never waits for it).",
        (),
    ),
    MetricDef("ferryman_learner_scored_connections", "gauge", "Connections the models score now.", ()),
    MetricDef(
        "ferryman_forecast_beats_naive",
        "gauge",
        "1 if the selected forecaster's rolling error beats the naive forecast's.",
        (),
    ),
    MetricDef(
        "ferryman_scale_servers",
        "gauge",
        "Servers the scaler manages, by phase (provisioning, ready, draining).",
        ("pool", "phase"),
    ),
    MetricDef(
        "ferryman_scale_desired_servers",
        "gauge",
        "Servers the scaler's last decision wanted (before min/max bounds and cooldowns).",
        ("pool",),
    ),
    MetricDef(
        "ferryman_scale_lead_time_seconds",
        "gauge",
        "Provisioning lead time the scaler plans with (a quantile of the measured start times).",
        ("pool",),
    ),
    MetricDef(
        "ferryman_scale_migrations_total",
        "counter",
        "Connections the scaler moved, by result (committed, failed: deferred, rolled back or gone).",
        ("pool", "result"),
    ),
    MetricDef(
        "ferryman_scale_provision_failures_total", "counter", "Server starts that failed.", ("pool",)
    ),
    MetricDef(
        "ferryman_forecast_messages_per_second",
        "gauge",
        "Forecast message rate for the step horizon_steps ahead: the band's lower edge, middle and upper edge.",
        ("horizon_steps", "bound"),
    ),
)

METRICS_BY_NAME: dict[str, MetricDef] = {m.name: m for m in METRICS}

Sample = tuple[str, Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render_prometheus(samples: Iterable[Sample]) -> str:
    """Render samples in the Prometheus text exposition format 0.0.4, grouped per metric in table order.

    Raises KeyError for an undeclared metric and ValueError for a label set that does not match its
    declaration, so a typo cannot silently export a new series.
    """
    grouped: dict[str, list[str]] = {}
    for name, labels, value in samples:
        definition = METRICS_BY_NAME[name]
        if tuple(labels) != definition.labels:
            raise ValueError(f"{name}: labels {tuple(labels)} do not match {definition.labels}")
        if labels:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            line = f"{name}{{{label_text}}} {_number(value)}"
        else:
            line = f"{name} {_number(value)}"
        grouped.setdefault(name, []).append(line)
    out: list[str] = []
    for definition in METRICS:
        lines = grouped.get(definition.name)
        if not lines:
            continue
        out.append(f"# HELP {definition.name} {definition.help}")
        out.append(f"# TYPE {definition.name} {definition.kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"
