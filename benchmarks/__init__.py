"""Benchmarks of the PolarQuant backends (never run inside the test suite)."""
