"""The server's own counters, in its own Prometheus registry (never the global one).

jouletrace_diffusion_requests_total{kind, status}   requests by outcome: ok, invalid,
                                                    rejected (429), cancelled, error, disconnected
jouletrace_diffusion_images_total                   images returned
jouletrace_diffusion_videos_total                   videos returned
jouletrace_diffusion_batch_size{kind}               histogram of items per pipeline call
jouletrace_diffusion_batch_duration_seconds{kind}   histogram of pipeline-call seconds
jouletrace_diffusion_queue_depth                    items waiting (gauge)
jouletrace_diffusion_denoise_steps_total{kind}      denoising item-steps done (items x steps)
jouletrace_diffusion_denoise_steps_per_second{kind} item-steps per second in the last batch
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from servers.diffusion.batcher import Batch

__all__ = ["ServerMetrics"]


class ServerMetrics:
    """Counters for one server; ``queue_depth`` is read at scrape time."""

    def __init__(self, queue_depth: Callable[[], float], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "jouletrace_diffusion"
        self.requests = Counter(
            f"{p}_requests", "Requests by kind and outcome.", ["kind", "status"], registry=r
        )
        self.images = Counter(f"{p}_images", "Images returned.", registry=r)
        self.videos = Counter(f"{p}_videos", "Videos returned.", registry=r)
        self.batch_size = Histogram(
            f"{p}_batch_size",
            "Items (images or videos) per pipeline call.",
            ["kind"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_duration_seconds",
            "Seconds per pipeline call (s).",
            ["kind"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.queue = Gauge(f"{p}_queue_depth", "Items waiting in the queue.", registry=r)
        self.queue.set_function(queue_depth)
        self.steps = Counter(
            f"{p}_denoise_steps", "Denoising item-steps done (items x steps).", ["kind"], registry=r
        )
        self.steps_rate = Gauge(
            f"{p}_denoise_steps_per_second", "Item-steps per second in the last batch.", ["kind"], registry=r
        )

    def batch(self, batch: Batch) -> None:
        """Count a finished pipeline call (failed ones count their size and time, not their steps)."""
        kind = batch.shape.kind
        self.batch_size.labels(kind).observe(batch.items)
        self.batch_seconds.labels(kind).observe(batch.seconds)
        if batch.error is None:
            item_steps = batch.items * batch.shape.steps
            self.steps.labels(kind).inc(item_steps)
            if batch.seconds > 0:
                self.steps_rate.labels(kind).set(item_steps / batch.seconds)

    def request(self, kind: str, status: str, outputs: int = 0) -> None:
        self.requests.labels(kind, status).inc()
        if outputs:
            (self.images if kind == "image" else self.videos).inc(outputs)

    def render(self) -> bytes:
        return generate_latest(self.registry)
