"""Benchmarks of the worker against bare Celery on the same broker (bench/run.py)."""
