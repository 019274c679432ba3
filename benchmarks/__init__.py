"""Timing scripts for modeq (run as ``python -m benchmarks.<name>`` from the repository root)."""
