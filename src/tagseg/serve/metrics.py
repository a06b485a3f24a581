"""Prometheus text exposition of the service's counters, written by hand (no client library)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """Requests by route and status, a latency histogram, images processed; gauges read on demand."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._bucket_counts = [0] * len(LATENCY_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0
        self._images = 0
        self._gauges = gauges

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._latency_sum += seconds
            self._latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self._bucket_counts[i] += 1

    def image_processed(self) -> None:
        """Count one image that went through the pipeline."""
        with self._lock:
            self._images += 1

    def render(self) -> str:
        """The Prometheus text format (version 0.0.4)."""
        with self._lock:
            lines = [
                "# HELP tagseg_requests_total HTTP requests answered, by method, route and status.",
                "# TYPE tagseg_requests_total counter",
            ]
            for (method, route, status), count in sorted(self._requests.items()):
                lines.append(
                    f'tagseg_requests_total{{method="{method}",route="{_escape(route)}",status="{status}"}} {count}'
                )
            lines += [
                "# HELP tagseg_request_duration_seconds Time to answer a request.",
                "# TYPE tagseg_request_duration_seconds histogram",
            ]
            for bound, count in zip(LATENCY_BUCKETS, self._bucket_counts):
                lines.append(f'tagseg_request_duration_seconds_bucket{{le="{bound}"}} {count}')
            lines += [
                f'tagseg_request_duration_seconds_bucket{{le="+Inf"}} {self._latency_count}',
                f"tagseg_request_duration_seconds_sum {self._latency_sum:.6f}",
                f"tagseg_request_duration_seconds_count {self._latency_count}",
                "# HELP tagseg_images_processed_total Images segmented.",
                "# TYPE tagseg_images_processed_total counter",
                f"tagseg_images_processed_total {self._images}",
            ]
        for name, (help_text, read) in self._gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
