"""What the worker counts for Prometheus (recorder.py) and the endpoint that serves it
(endpoint.py, on the bounded server of bounded_http.py)."""

from __future__ import annotations

__all__: list[str] = []
