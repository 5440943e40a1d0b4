"""Benchmarks: commands that print tables (see benchmarks/README.md)."""
