"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide).

``GET /metrics`` renders them in the Prometheus text format:

==========================================================  ==========================================================
``onevision_requests_total{model,code}``                    answered chat requests by HTTP status (streams: 200, or
                                                            the status of the error that ended them)
``onevision_queue_depth{model}``                            requests waiting for a batch
``onevision_running_requests{model}``                       requests in the batch being generated
``onevision_batch_size{model}``                             histogram of batch sizes
``onevision_prompt_tokens_total{model}``                    prompt tokens (text + visual) of answered requests
``onevision_generation_tokens_total{model}``                generated tokens (all rows, cancelled ones included)
``onevision_generation_tokens_per_second{model}``           generated tokens / wall time of the latest batch
``onevision_finished_total{model,reason}``                  rows ended by ``stop``, ``length``, ``cancelled``, ``error``
``onevision_request_latency_seconds{model}``                histogram: arrival to last byte
``onevision_time_to_first_token_seconds{model}``            histogram: arrival to first generated token
==========================================================  ==========================================================
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "onevision_requests", "Chat requests answered, by HTTP status", ["model", "code"], registry=r
        )
        self.queue = Gauge("onevision_queue_depth", "Requests waiting for a batch", ["model"], registry=r)
        self.running = Gauge(
            "onevision_running_requests", "Requests in the running batch", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "onevision_batch_size",
            "Requests per generated batch",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "onevision_prompt_tokens", "Prompt tokens (text + visual)", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "onevision_generation_tokens", "Generated tokens", ["model"], registry=r
        )
        self.tokens_per_second = Gauge(
            "onevision_generation_tokens_per_second",
            "Generated tokens per second, latest batch",
            ["model"],
            registry=r,
        )
        self.finished_rows = Counter(
            "onevision_finished", "Rows ended, by reason", ["model", "reason"], registry=r
        )
        self.latency = Histogram(
            "onevision_request_latency_seconds",
            "Arrival to last byte",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "onevision_time_to_first_token_seconds",
            "Arrival to first generated token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def register_model(self, model: str) -> None:
        """Create a model's series at zero, so they are listed before its first request."""
        self.queue.labels(model).set(0)
        self.running.labels(model).set(0)
        self.prompt_tokens.labels(model)
        self.generation_tokens.labels(model)
        self.tokens_per_second.labels(model).set(0)

    # -- called by the batcher (worker thread) and the app ------------------------------------------------------
    def gauge(self, which: str, model: str, value: int) -> None:
        (self.queue if which == "queue" else self.running).labels(model).set(value)

    def batch(self, model: str, size: int, tokens: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        if seconds > 0:
            self.tokens_per_second.labels(model).set(tokens / seconds)

    def finished(self, model: str, reason: str, tokens: int) -> None:
        self.finished_rows.labels(model, reason).inc()
        if tokens:
            self.generation_tokens.labels(model).inc(tokens)

    def request(self, model: str, code: int, seconds: float, prompt_tokens: int = 0) -> None:
        self.requests.labels(model, str(code)).inc()
        self.latency.labels(model).observe(seconds)
        if prompt_tokens:
            self.prompt_tokens.labels(model).inc(prompt_tokens)

    def first_token(self, model: str, seconds: float) -> None:
        self.ttft.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
