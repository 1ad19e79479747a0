"""Stage 2: one training loop for every segmenter, driven by its Recipe."""
