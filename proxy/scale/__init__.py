"""Predictive scaling: the sans-IO decision core, its asyncio driver, provisioners and a fleet simulator."""

from proxy.scale.core import (
    Action,
    ConnectionView,
    Decision,
    Drain,
    ForecastView,
    Migrate,
    MigrationBudget,
    MigrationOrder,
    Observation,
    Phase,
    Provision,
    ScaleSettings,
    ScalingCore,
    ServerView,
    Stop,
    plan_migrations,
)

__all__ = [
    "Action",
    "ConnectionView",
    "Decision",
    "Drain",
    "ForecastView",
    "Migrate",
    "MigrationBudget",
    "MigrationOrder",
    "Observation",
    "Phase",
    "Provision",
    "ScaleSettings",
    "ScalingCore",
    "ServerView",
    "Stop",
    "plan_migrations",
]
