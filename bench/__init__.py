"""Benchmarks: `python -m bench` compares expc with the tools researchers use (BENCHMARKS.md)."""
