"""Length-bucketed batches: every example once per epoch, seeded, and less padding than plain shuffling."""

import random

from lora_recycle.tuning.batching import bucketed_batch_order, padding_share
from lora_recycle.tuning.loop import batch_order


def test_each_epoch_covers_every_example_once():
    lengths = [random.Random(0).randint(10, 120) for _ in range(80)]
    order = bucketed_batch_order(lengths, 8, 30, seed=3)
    assert len(order) == 30 and all(len(b) == 8 for b in order)
    for epoch in range(3):
        seen = sorted(i for b in order[10 * epoch : 10 * (epoch + 1)] for i in b)
        assert seen == list(range(80))


def test_seeded_and_less_padding():
    rng = random.Random(1)
    lengths = [rng.randint(10, 120) for _ in range(96)]
    assert bucketed_batch_order(lengths, 8, 24, seed=5) == bucketed_batch_order(lengths, 8, 24, seed=5)
    assert bucketed_batch_order(lengths, 8, 24, seed=5) != bucketed_batch_order(lengths, 8, 24, seed=6)
    bucketed = padding_share(lengths, bucketed_batch_order(lengths, 8, 120, seed=0))
    plain = padding_share(lengths, batch_order(len(lengths), 8, 120, seed=0))
    assert bucketed < 0.5 * plain


def test_small_sets_and_padding_share():
    assert [sorted(b) for b in bucketed_batch_order([5, 6, 7], 8, 2, seed=0)] == [[0, 1, 2]] * 2
    assert padding_share([2, 4], [[0, 1]]) == 0.25
