"""Benchmarks behind ``segkit-bench``: real runs, timed in one process, reported as ratios."""
