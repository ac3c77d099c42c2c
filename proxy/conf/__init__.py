"""ferryman's configuration: the YAML file format, its loader and its errors.

    from proxy.conf import ConfigInvalid, load_config

    try:
        config = load_config("ferryman.yaml")
    except ConfigInvalid as exc:
        for error in exc.errors:       # every problem at once, in file order
            print(error)               # ferryman.yaml:12:16: pools[0].servers[1].address: ...

The models and the loader are imported on first use (PEP 562): that keeps
``python -m proxy.conf.schema`` (which regenerates ``config/schema.json``) from importing its own
module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from proxy.conf.errors import ConfigError, ConfigInvalid

if TYPE_CHECKING:
    from proxy.conf.loader import load_config, load_config_text
    from proxy.conf.schema import (
        Admin,
        Config,
        GlobalSettings,
        HealthCheck,
        Listener,
        MetricsRetention,
        MetricsSettings,
        Pool,
        ProvisionerSettings,
        ScaleSettings,
        Server,
        StoreSettings,
        UsageSettings,
        json_schema,
        json_schema_text,
        parse_hostport,
    )

_LAZY = {
    "load_config": "proxy.conf.loader",
    "load_config_text": "proxy.conf.loader",
    "Admin": "proxy.conf.schema",
    "Config": "proxy.conf.schema",
    "GlobalSettings": "proxy.conf.schema",
    "HealthCheck": "proxy.conf.schema",
    "Listener": "proxy.conf.schema",
    "MetricsRetention": "proxy.conf.schema",
    "MetricsSettings": "proxy.conf.schema",
    "Pool": "proxy.conf.schema",
    "ProvisionerSettings": "proxy.conf.schema",
    "ScaleSettings": "proxy.conf.schema",
    "Server": "proxy.conf.schema",
    "UsageSettings": "proxy.conf.schema",
    "StoreSettings": "proxy.conf.schema",
    "json_schema": "proxy.conf.schema",
    "json_schema_text": "proxy.conf.schema",
    "parse_hostport": "proxy.conf.schema",
}

__all__ = [
    "Admin",
    "Config",
    "ConfigError",
    "ConfigInvalid",
    "GlobalSettings",
    "HealthCheck",
    "Listener",
    "MetricsRetention",
    "MetricsSettings",
    "Pool",
    "ProvisionerSettings",
    "ScaleSettings",
    "Server",
    "StoreSettings",
    "UsageSettings",
    "json_schema",
    "json_schema_text",
    "load_config",
    "load_config_text",
    "parse_hostport",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
