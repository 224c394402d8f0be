"""Hypothesis settings shared by the fuzzers: seeded, bounded, writing nothing to disk."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# FUZZ_SCALE=5 runs five times the examples (a deeper local run); CI keeps the budget, 1.
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def seeded(max_examples: int) -> settings:
    """A fixed seed (derandomize) and no example database, so every run sends the same requests
    and nothing is stored between runs; no per-example deadline, because the request timeouts
    bound each example instead."""
    return settings(
        max_examples=max(1, round(max_examples * SCALE)),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
