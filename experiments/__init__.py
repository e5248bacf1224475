"""Experiment and benchmark scripts, each run as a module: ``python -m experiments.<name>``."""
