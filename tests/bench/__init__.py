"""Benchmarks run by `make bench-*`; pytest never collects them (`bench_*.py`)."""
