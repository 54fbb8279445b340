"""``/api/metrics``: the service's state in the Prometheus text format (prometheus_client),
collected from the databases and the service object at each scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from contimg.web.context import WebContext


__all__ = ["prometheus_text"]


class _ServiceCollector:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx

    def collect(self):
        ctx = self.ctx
        groups = GaugeMetricFamily("contimg_groups", "groups by state", labels=["state"])
        for state, n in ctx.ingest.counts().items():
            groups.add_metric([state], n)
        yield groups
        stage = CounterMetricFamily("contimg_stage_seconds", "seconds spent per stage (computed, not replayed)",
                                    labels=["stage"])
        runs = CounterMetricFamily("contimg_stage_runs", "stage runs (computed, not replayed)", labels=["stage"])
        for r in ctx.ingest.stage_totals(ctx.stages):
            stage.add_metric([r["stage"]], r["s"])
            runs.add_metric([r["stage"]], r["n"])
        yield stage
        yield runs
        health = GaugeMetricFamily("contimg_task_up", "1 if the task is ok, 0.5 degraded, 0 failed or stopped",
                                   labels=["task"])
        for task, state in ctx.task_health().items():
            health.add_metric([task], {"ok": 1.0, "degraded": 0.5}.get(state, 0.0))
        yield health
        doc = ctx.health_doc()
        yield GaugeMetricFamily("contimg_loop_lag_seconds_max", "largest event-loop timer lag, last minute",
                                value=doc["loop_lag_ms"]["max"] / 1e3)
        yield GaugeMetricFamily("contimg_resident_memory_bytes", "resident memory of the service",
                                value=doc["rss_bytes"])
        yield GaugeMetricFamily("contimg_websocket_clients", "connected WebSocket clients", value=ctx.ws_clients)
        inmem = GaugeMetricFamily("contimg_queue_depth", "groups waiting on an in-memory queue", labels=["queue"])
        for q, n in doc["queues"].items():
            inmem.add_metric([q], n)
        yield inmem
        backend = GaugeMetricFamily("contimg_stage_on_device", "1 if the stage runs on the GPU, 0 on the CPU "
                                    "(chosen at start-up after its self-check)", labels=["stage", "requested", "checked"])
        figures = GaugeMetricFamily("contimg_selfcheck_figure", "a stage's self-check: its device path against the "
                                    "CPU twin (limit: the figure's own limit)", labels=["stage", "figure", "what"])
        for stage, c in (doc.get("backends") or {}).items():
            backend.add_metric([stage, c["requested"], str(bool(c["checked"])).lower()], float(c["backend"] == "gpu"))
            for name, f in (c.get("figures") or {}).items():
                figures.add_metric([stage, name, "value"], f["value"])
                figures.add_metric([stage, name, "limit"], f["limit"])
        yield backend
        yield figures


def prometheus_text(ctx: WebContext) -> str:
    registry = CollectorRegistry()
    registry.register(_ServiceCollector(ctx))
    return generate_latest(registry).decode()
