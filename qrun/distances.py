"""How far apart two measured distributions are: what `qrun report` and `qrun diff` show.

Both take counts (or probabilities) keyed by outcome and normalise them first, so two
experiments with different shot counts compare as distributions.
"""

from __future__ import annotations

import math


def normalised(counts: dict[str, float]) -> dict[str, float]:
    """Counts as probabilities (they sum to 1)."""
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("a distribution needs a positive total")
    return {outcome: value / total for outcome, value in counts.items()}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """½ Σ |p(x) − q(x)|: 0 for the same distribution, 1 for disjoint ones."""
    p, q = normalised(p), normalised(q)
    return 0.5 * sum(abs(p.get(x, 0.0) - q.get(x, 0.0)) for x in p.keys() | q.keys())


def hellinger_fidelity(p: dict[str, float], q: dict[str, float]) -> float:
    """(Σ √(p(x) q(x)))², the classical fidelity: Qiskit's hellinger_fidelity, which is
    (1 − H²)² for the Hellinger distance H."""
    p, q = normalised(p), normalised(q)
    overlap = sum(math.sqrt(value * q[x]) for x, value in p.items() if x in q)
    return min(1.0, overlap * overlap)  # rounding can pass 1 by an ulp
