"""Stage 5: result tables and summaries."""
