"""Benchmarks runnable as modules: ``python -m ringloom.bench.allreduce``; under the launcher,
``python -m ringloom launch -n 2 -m ringloom.bench.comm_methods ...`` (loss and bytes of each
gradient-communication method, for notebooks/beyond_allreduce.ipynb)."""
