"""Benchmark tests: the results store."""
