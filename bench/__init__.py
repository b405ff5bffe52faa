"""Benchmarks of the daemon on PostgreSQL; run each with ``python -m bench.<name>``."""
