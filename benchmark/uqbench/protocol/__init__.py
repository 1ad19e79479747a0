"""Stage 4, the fixed yardstick: pure numpy/scipy functions (no torch) for metrics, failures and patches."""
