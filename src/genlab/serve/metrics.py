"""Request counters and latency histograms in the Prometheus text exposition format (version 0.0.4).

Hand-written: the format is a few lines of text, and prometheus_client is not a dependency.
Endpoints are labelled by their route template (`/v1/models/{name}`), never the raw path, so
a client cannot create unbounded label values.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

# Seconds; from a cached model listing (~1 ms) to a long inpainting run.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)  # (endpoint, method, code) -> count
        self.errors: dict[int, int] = defaultdict(int)  # code -> count
        # endpoint -> (counts per bucket (non-cumulative, last one is +Inf), sum, count)
        self.latency: dict[str, list] = {}

    def observe(self, endpoint: str, method: str, code: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, method, code)] += 1
            if code >= 400:
                self.errors[code] += 1
            histogram = self.latency.setdefault(endpoint, [[0] * (len(LATENCY_BUCKETS) + 1), 0.0, 0])
            histogram[0][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            histogram[1] += seconds
            histogram[2] += 1

    def render(self, loaded_models: list[tuple[str, str]], queue: dict) -> str:
        """The exposition text. loaded_models: (name, family) of the models in memory."""
        lines = [
            "# HELP genlab_requests_total HTTP requests by endpoint, method and status code.",
            "# TYPE genlab_requests_total counter",
        ]
        with self._lock:
            for (endpoint, method, code), count in sorted(self.requests.items()):
                lines.append(f"genlab_requests_total{_labels(endpoint=endpoint, method=method, code=str(code))} {count}")
            lines += ["# HELP genlab_errors_total HTTP responses with a 4xx or 5xx status, by code.",
                      "# TYPE genlab_errors_total counter"]
            for code, count in sorted(self.errors.items()):
                lines.append(f"genlab_errors_total{_labels(code=str(code))} {count}")
            lines += ["# HELP genlab_request_duration_seconds Time from request to the end of the response, by endpoint.",
                      "# TYPE genlab_request_duration_seconds histogram"]
            for endpoint, (counts, total, count) in sorted(self.latency.items()):
                cumulative = 0
                for bound, bucket in zip((*LATENCY_BUCKETS, "+Inf"), counts):
                    cumulative += bucket
                    le = bound if isinstance(bound, str) else repr(float(bound))
                    lines.append(f"genlab_request_duration_seconds_bucket{_labels(endpoint=endpoint, le=le)} {cumulative}")
                lines.append(f"genlab_request_duration_seconds_sum{_labels(endpoint=endpoint)} {total:.6f}")
                lines.append(f"genlab_request_duration_seconds_count{_labels(endpoint=endpoint)} {count}")
        lines += ["# HELP genlab_models_loaded Models held in memory by the LRU cache.",
                  "# TYPE genlab_models_loaded gauge",
                  f"genlab_models_loaded {len(loaded_models)}",
                  "# HELP genlab_model_loaded 1 for each model in memory.",
                  "# TYPE genlab_model_loaded gauge"]
        lines += [f"genlab_model_loaded{_labels(model=name, family=family)} 1" for name, family in loaded_models]
        lines += ["# HELP genlab_inference_jobs Inference jobs running or waiting for a worker.",
                  "# TYPE genlab_inference_jobs gauge",
                  f"genlab_inference_jobs {queue['jobs']}",
                  "# HELP genlab_inference_capacity Jobs the server holds before answering 429 (workers + queue).",
                  "# TYPE genlab_inference_capacity gauge",
                  f"genlab_inference_capacity {queue['capacity']}",
                  "# HELP genlab_inference_rejected_total Jobs refused with 429 because the queue was full.",
                  "# TYPE genlab_inference_rejected_total counter",
                  f"genlab_inference_rejected_total {queue['rejected']}"]
        return "\n".join(lines) + "\n"
