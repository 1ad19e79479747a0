"""Stage 3: MC-dropout sampling and post-processing."""
