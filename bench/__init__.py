"""Benchmarks: each module prints ratios against a baseline measured in the same run.

Run them from the repository root as modules, e.g. `python -m bench.store --quick` (`make bench`
runs them all).
"""
