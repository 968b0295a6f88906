"""Benchmarks: one script per measurement; results go to bench/RESULTS.md."""
