"""Benchmarks behind `streamd bench`."""
