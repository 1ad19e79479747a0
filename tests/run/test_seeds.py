"""Every (seed, fold) pair draws from its own stream; seed 0, the boards' seed, keeps the streams it always had."""

from __future__ import annotations

import itertools

from uqbench.run.seeds import HELD_OUT, predict_seed, stream_seed


def test_each_seed_and_fold_has_its_own_training_and_detector_stream() -> None:
    pairs = list(itertools.product(range(6), [0, 1, 2, 3, HELD_OUT]))
    seeds = [stream_seed(s, k) for s, k in pairs]
    assert len(set(seeds)) == len(pairs)
    assert stream_seed(1, 0) != stream_seed(0, 1)  # the collision of seed + fold


def test_seed_0_keeps_the_streams_the_stored_stages_were_made_with() -> None:
    assert [stream_seed(0, k) for k in (0, 1, 2, 3, HELD_OUT)] == [0, 1, 2, 3, 97]


def test_prediction_seeds_of_every_seed_fold_and_role_do_not_overlap() -> None:
    """Case i of a case set draws predict_seed + i; sets of up to 500 cases never share a seed."""
    ranges = [range(predict_seed(s, k, training=t), predict_seed(s, k, training=t) + 500)
              for s in range(3) for k in (0, 1, 2, 3, HELD_OUT) for t in (False, True)]
    for a, b in itertools.combinations(ranges, 2):
        assert a.stop <= b.start or b.stop <= a.start
