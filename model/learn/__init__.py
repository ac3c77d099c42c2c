"""Online models of the learner process: aggregate forecasters and per-connection scores.

This package (and only this package) imports river; the proxy never imports it, and neither does
``model/__init__.py``.  The learner process imports it when models are enabled.

- ``Learner``: aggregate series (messages per step) -> ``Forecast`` with an error band, from the
  best of several forecasters per horizon (``forecasters/``).
- ``ConnectionModel``: per-connection rate, trend, burstiness, idle time and age, vectorised over
  all connections each tick -> ``Score`` (predicted rate, stability, churn probability, health).

docs/models.md describes the features, formulas and the evaluation on real traces.
"""

from __future__ import annotations

from model.learn.connections import ConnectionModel
from model.learn.learner import Forecast, Learner, Observed
from model.learn.scores import ChurnHazard, Score

__all__ = ["ChurnHazard", "ConnectionModel", "Forecast", "Learner", "Observed", "Score"]
