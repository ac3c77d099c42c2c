"""``UsageOptions``: the ``usage:`` section of the proxy's configuration, as a plain frozen value.

The CLI builds one from its flags, the proxy from its configuration (``from_config``); the pipeline
reads nothing else.  ``input_format`` and ``top_n`` have no YAML key: their defaults are the proxy's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMATS = ("auto", "ferryman", "combined")


@dataclass(frozen=True, slots=True)
class UsageOptions:
    schedule: bool = False
    time_zone: str = "UTC"
    input: str | None = None
    output_dir: str = "usage"
    source: str = "ferryman"
    session_timeout_s: int = 1800
    double_click_window_s: int = 30
    retention_days: int = 400
    metadata: str | None = None
    input_format: str = "auto"
    top_n: int = 100

    @classmethod
    def from_config(cls, config: Any) -> UsageOptions:
        """From a loaded ``proxy.conf.Config`` (its ``usage`` section must be present); ``input``
        defaults to ``global.access_log`` as the section documents."""
        usage = config.usage
        if usage is None:
            raise ValueError("the configuration has no usage section")
        access_log = config.global_.access_log
        return cls(
            schedule=usage.schedule,
            time_zone=usage.time_zone,
            input=usage.input if usage.input is not None else access_log,
            output_dir=usage.output_dir,
            source=usage.source,
            session_timeout_s=usage.session_timeout_s,
            double_click_window_s=usage.double_click_window_s,
            retention_days=usage.retention_days,
            metadata=usage.metadata,
        )

    def problems(self) -> list[str]:
        """Everything wrong with these options, as messages (empty when they can be used)."""
        from model.usage.files import valid_source
        from model.usage.localtime import BadValue, load_zone

        out: list[str] = []
        try:
            load_zone(self.time_zone)
        except BadValue as exc:
            out.append(str(exc))
        if not valid_source(self.source):
            out.append(f"source {self.source!r} must be letters, digits, '.', '_' or '-' (a file name)")
        if self.session_timeout_s <= 0:
            out.append("session timeout must be positive")
        if self.double_click_window_s < 0:
            out.append("double-click window cannot be negative")
        if self.retention_days < 1:
            out.append("retention must be at least one day")
        if self.input_format not in FORMATS:
            out.append(f"format must be one of {', '.join(FORMATS)}")
        if self.top_n < 1:
            out.append("top-N must be at least 1")
        return out
