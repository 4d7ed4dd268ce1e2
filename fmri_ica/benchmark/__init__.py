"""Benchmarks run from the command line: the paper's synthetic data and simulated fMRI."""
