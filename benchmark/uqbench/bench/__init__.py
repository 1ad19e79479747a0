"""Benchmarks (`uqbench bench ...`): speed measured side by side against baselines, never in unit tests."""
