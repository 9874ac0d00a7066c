"""Benchmarks (not tests): each prints one JSON line; results are summarized in BENCHMARKS.md."""
