"""The learner's work per tick: store rows, roll up, groom, update models, build the reply."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.learner.collector import TickRows
from model.tsdb import SeriesStore
from model.tsdb.groom import Retention

ROLLUP_EVERY_S = 10.0
GROOM_EVERY_S = 3600.0
TOP_SCORES = 1000
FORECAST_STEP_S = 60.0  # the aggregate series the forecasters learn is messages per minute
FORECAST_HORIZON = 12


@dataclass
class Engine:
    store: SeriesStore
    learner: Any  # model.learn.Learner, or None when the models are not installed
    connections: Any  # model.learn.ConnectionModel, or None
    capacity: int
    slots: dict[int, int] = field(default_factory=dict)
    conn_at: dict[int, int] = field(default_factory=dict)  # slot -> connection id
    free: list[int] = field(default_factory=list)
    next_rollup_s: float = 0.0
    next_groom_s: float = 0.0
    step_start_s: float | None = None
    step_msgs: int = 0
    ticks: int = 0
    last_now_s: float = 0.0

    @classmethod
    def open(cls, args: Any) -> Engine:
        raw, minute, hour, day, session = (float(x) for x in args.retention.split(","))
        store = SeriesStore(
            args.db,
            interval_s=args.interval_s,
            time_zone=args.time_zone,
            lateness_s=args.lateness_s,
            retention=Retention(raw, minute, hour, day, session),
        )
        capacity = args.max_scored_connections
        learner = connections = None
        if not args.no_models:
            from model.learn import ConnectionModel, Learner

            learner = Learner(step_s=FORECAST_STEP_S, season_steps=24 * 60, seed=args.seed)
            connections = ConnectionModel(capacity=capacity, horizon_s=60.0, seed=args.seed)
        return cls(
            store=store,
            learner=learner,
            connections=connections,
            capacity=capacity,
            free=list(range(capacity - 1, -1, -1)),
        )

    def tick(self, rows: TickRows) -> dict[str, Any]:
        now = rows.ts
        self.last_now_s = now
        self.ticks += 1
        self.store.record_snapshot(now, rows.values)
        if rows.sessions:
            self.store.record_sessions(rows.sessions)
        if now >= self.next_rollup_s:
            self.store.rollup(now)
            self.next_rollup_s = now + ROLLUP_EVERY_S
        if now >= self.next_groom_s:
            self.store.groom(now)
            self.next_groom_s = now + GROOM_EVERY_S
        if self.connections is not None:
            self._update_connections(rows)
        if self.learner is not None:
            self._update_aggregate(now, rows.total_msgs)
        return self.reply(now)

    def _slot_for(self, conn_id: int, now: float) -> int | None:
        slot = self.slots.get(conn_id)
        if slot is not None:
            return slot
        if not self.free:
            return None  # over capacity: this connection is not scored (bounded memory)
        slot = self.free.pop()
        self.slots[conn_id] = slot
        self.conn_at[slot] = conn_id
        self.connections.open(slot, now)
        return slot

    def _release(self, slot: int, now: float) -> None:
        self.connections.close(slot, now)
        del self.conn_at[slot]
        self.free.append(slot)

    def _update_connections(self, rows: TickRows) -> None:
        now = rows.ts
        for conn_id in rows.ended_ids:
            slot = self.slots.pop(conn_id, None)
            if slot is not None:
                self._release(slot, now)
        live = set(rows.conn_ids)
        for conn_id in [c for c in self.slots if c not in live]:  # ended without a record
            self._release(self.slots.pop(conn_id), now)
        idx, slots = [], []
        for i, conn_id in enumerate(rows.conn_ids):
            slot = self._slot_for(conn_id, now)
            if slot is not None:
                idx.append(i)
                slots.append(slot)
        if not slots:
            return
        take = np.asarray(idx, dtype=np.int64)
        msgs = np.frombuffer(rows.conn_msgs, dtype=np.int64)[take].astype(np.float64)
        nbytes = np.frombuffer(rows.conn_bytes, dtype=np.int64)[take].astype(np.float64)
        self.connections.update(now, np.asarray(slots, dtype=np.int64), msgs, nbytes)

    def _update_aggregate(self, now: float, msgs: int) -> None:
        start = math.floor(now / FORECAST_STEP_S) * FORECAST_STEP_S
        if self.step_start_s is None:
            self.step_start_s = start  # partial first step: not learned
            return
        if start > self.step_start_s:
            if self.step_msgs >= 0 and self.ticks > 1:
                self.learner.observe_aggregate(self.step_start_s, float(self.step_msgs))
            self.step_start_s = start
            self.step_msgs = 0
        self.step_msgs += msgs

    def reply(self, now: float) -> dict[str, Any]:
        stats = self.store.statistics()
        out: dict[str, Any] = {
            "ts": now,
            "store": {"raw_rows_written": stats.raw_rows_written, "late_rows_dropped": stats.late_rows_dropped},
        }
        if self.connections is None or self.learner is None:
            return out
        # Only the top entries become objects: building every Score costs ~2 us per connection.
        by_slot = self.connections.scores(limit=TOP_SCORES)
        scores = []
        for slot, score in by_slot.items():
            conn_id = self.conn_at.get(slot)
            if conn_id is None:
                continue
            scores.append(
                {
                    "conn_id": conn_id,
                    "predicted_rate": float(score.predicted_rate),
                    "stability": float(score.stability),
                    "churn_p": float(score.churn_p),
                    "health": float(score.health),
                }
            )
        scores.sort(key=lambda s: (-s["predicted_rate"], s["conn_id"]))
        forecast = self.learner.forecast(FORECAST_HORIZON)
        return {
            **out,
            "scores": scores,
            "scored_connections": len(self.slots),
            "forecast": {
                "model": forecast.model_name,
                "beats_naive": bool(forecast.beats_naive),
                "step_s": FORECAST_STEP_S,
                "points": [list(map(float, p)) for p in forecast.points],
            },
            "learner": self.learner.statistics(),
        }

    def close(self) -> None:
        try:
            if self.last_now_s:
                self.store.rollup(self.last_now_s)
        finally:
            self.store.close()
