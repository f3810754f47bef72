"""Benchmarks (`python bench/<name>.py [--quick]`); see docs/benchmarks.md for the latest results."""
