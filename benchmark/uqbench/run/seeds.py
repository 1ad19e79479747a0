"""The random streams of a run's stages: which seed fold k's training, detector and held-out set draw from.

A run's stages and the detectors ``uqbench evaluate`` fits draw from the same streams, so one set of files gives
one set of numbers whoever fits the detector.
"""

from __future__ import annotations

HELD_OUT = -1
"""The fold number of a held-out test set's stages and rows (--test-data; patients without a fold in evaluate):
the segmenter trained on every training patient, its predictions, the detector fitted on every cross-validation
prediction."""

_HELD_OUT_STREAM = 97  # after any fold's
_STREAMS = 1000  # streams per seed: every fold number and the held-out stream are below it


def stream_seed(seed: int, k: int) -> int:
    """The seed fold ``k``'s training and detector draw with under the run's ``seed``: ``k`` (97 for the held-out
    set) plus 1000 per unit of seed, so every (seed, fold) pair has its own stream (seed 1 fold 0 is not seed 0
    fold 1) while seed 0, the boards' seed, keeps the streams it always had (0 + k)."""
    stream = _HELD_OUT_STREAM if k == HELD_OUT else k
    if not 0 <= stream < _STREAMS:
        raise ValueError(f"fold {k}: outside the {_STREAMS} streams a seed has")
    return seed * _STREAMS + stream


def predict_seed(seed: int, k: int, *, training: bool) -> int:
    """The first seed of fold ``k``'s predictions (case i draws ``predict_seed + i``): of its test patients, or of
    its own training patients (``training``, for an in-sample detector). Distinct for every seed, fold and role
    while a case set has under 500 cases."""
    stream = _HELD_OUT_STREAM if k == HELD_OUT else k
    return seed * 100_003 + stream * 1000 + (500 if training else 0)


_MEMBER_STRIDE = 2**32  # above every stream seed of a seed below 4 million


def member_seed(seed: int, k: int, member: int) -> int:
    """The seed member ``member`` of fold ``k``'s ensemble trains with: member 0 is the segmenter's own model
    (``stream_seed``), member m > 0 draws ``stream_seed + m * 2**32``, apart from every fold's and seed's
    stream, so an ensemble of 5 shares its first 3 members with an ensemble of 3."""
    if member < 0:
        raise ValueError(f"member {member}: must be 0 or more")
    return stream_seed(seed, k) + member * _MEMBER_STRIDE
