"""A round's test frames spread over its walkers' segments: the examination of a segment itself
is :func:`eelt.examine.examination.examine_frames`, as for a synchronous iteration."""

from __future__ import annotations


def walker_test_frames(n_test_per_round: int, n_walkers: int, walker: int) -> int:
    """Walker ``walker``'s share of the ``n_test_per_round`` test frames of a round."""
    return n_test_per_round // n_walkers + (walker < n_test_per_round % n_walkers)
