"""Stage 1, what goes in: NIfTI I/O, the ACDC layout and its validation, preprocessing, folds, phantom, cache."""
