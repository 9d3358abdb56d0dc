"""Benchmarks runnable as modules: ``python -m ringloom.bench.allreduce``."""
