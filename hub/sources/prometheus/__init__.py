"""Prometheus source: instant queries (`data.system`) and active alerts (`data.alerts`).

`source` runs the requests within the tick's budget, `fetch` reads one answer with a byte limit,
`shape` checks every answer against what the page and the seed's clients expect.
"""

from hub.sources.prometheus.source import PrometheusSource

__all__ = ["PrometheusSource"]
