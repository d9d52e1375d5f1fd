"""Reproducible suites: `python -m benchmarks.NAME [--quick] [--json PATH]` print and write figures."""
