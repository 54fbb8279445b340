"""``/api/metrics``: the service's state in the Prometheus text format (prometheus_client),
collected from the databases and the service object at each scrape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from contimg.service import Service

__all__ = ["prometheus_text"]


class _ServiceCollector:
    def __init__(self, svc: "Service"):
        self.svc = svc

    def collect(self):
        svc = self.svc
        groups = GaugeMetricFamily("contimg_groups", "groups by state", labels=["state"])
        for state, n in svc.ingest.counts().items():
            groups.add_metric([state], n)
        yield groups
        stage = CounterMetricFamily("contimg_stage_seconds", "seconds spent per stage (computed, not replayed)",
                                    labels=["stage"])
        runs = CounterMetricFamily("contimg_stage_runs", "stage runs (computed, not replayed)", labels=["stage"])
        for r in svc.ingest.db.query("SELECT stage, sum(seconds) AS s, count(*) AS n FROM performance_metrics "
                                     "WHERE replayed = 0 AND stage IN ('read', 'flag', 'calibrate', 'image', 'write') "
                                     "GROUP BY stage"):
            stage.add_metric([r["stage"]], r["s"])
            runs.add_metric([r["stage"]], r["n"])
        yield stage
        yield runs
        health = GaugeMetricFamily("contimg_task_up", "1 if the task is ok, 0.5 degraded, 0 failed or stopped",
                                   labels=["task"])
        for task, state in svc.health.items():
            health.add_metric([task], {"ok": 1.0, "degraded": 0.5}.get(state, 0.0))
        yield health
        doc = svc.health_doc()
        yield GaugeMetricFamily("contimg_loop_lag_seconds_max", "largest event-loop timer lag, last minute",
                                value=doc["loop_lag_ms"]["max"] / 1e3)
        yield GaugeMetricFamily("contimg_resident_memory_bytes", "resident memory of the service",
                                value=doc["rss_bytes"])
        yield GaugeMetricFamily("contimg_websocket_clients", "connected WebSocket clients", value=svc.ws_clients)
        inmem = GaugeMetricFamily("contimg_queue_depth", "groups waiting on an in-memory queue", labels=["queue"])
        for q, n in doc["queues"].items():
            inmem.add_metric([q], n)
        yield inmem


def prometheus_text(svc: "Service") -> str:
    registry = CollectorRegistry()
    registry.register(_ServiceCollector(svc))
    return generate_latest(registry).decode()
