"""Robinson-Fisher naive Bayes (Gary Robinson's "A Statistical Approach to the Spam
Problem", 2003; the combining used by SpamBayes and SpamAssassin's BAYES rules).

Per token with spam count ``s``, ham count ``h`` over ``ns`` spam and ``nh`` ham messages
trained: ``p = (s/ns) / (s/ns + h/nh)``, pulled towards 0.5 when seen rarely,
``f = (S*X + n*p) / (S + n)``. The most telling tokens' ``f`` are combined by Fisher's
chi-square method into ``H`` and ``S``; the message's spam probability is ``(1 + S - H) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

STRENGTH = 0.45      # Robinson's s: how much weight the prior X has
PRIOR = 0.5          # Robinson's x: what an unseen token says
MIN_DEVIATION = 0.1  # tokens with |f - 0.5| below this are ignored
MAX_TOKENS = 150     # the most telling tokens that are combined


def chi2q(x2: float, freedom: int) -> float:
    """P(chi-square with ``freedom`` (even) degrees >= ``x2``)."""
    m = x2 / 2.0
    total = term = math.exp(-m)
    for i in range(1, freedom // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def token_probability(spam: int, ham: int, nspam: int, nham: int) -> float:
    n = spam + ham
    if n == 0 or nspam == 0 or nham == 0:
        return PRIOR
    ps, ph = spam / nspam, ham / nham
    p = ps / (ps + ph)
    return (STRENGTH * PRIOR + n * p) / (STRENGTH + n)


def spam_probability(counts: Mapping[str, tuple[int, int]], nspam: int, nham: int) -> float | None:
    """0 (ham) .. 1 (spam); None when no token tells anything."""
    fs = [token_probability(s, h, nspam, nham) for s, h in counts.values()]
    telling = sorted((f for f in fs if abs(f - 0.5) >= MIN_DEVIATION), key=lambda f: -abs(f - 0.5))[:MAX_TOKENS]
    if not telling:
        return None
    n = len(telling)
    ln_f = sum(math.log(max(f, 1e-200)) for f in telling)
    ln_1f = sum(math.log(max(1.0 - f, 1e-200)) for f in telling)
    spamminess = 1.0 - chi2q(-2.0 * ln_1f, 2 * n)   # near 1 when the tokens are spammy
    hamminess = 1.0 - chi2q(-2.0 * ln_f, 2 * n)     # near 1 when they are hammy
    return (1.0 + spamminess - hamminess) / 2.0


# SpamAssassin's BAYES_* bands and scores (50_scores.cf, network off), as (probability, test, points).
BANDS = (
    (0.99, "BAYES_99", 3.5),
    (0.95, "BAYES_95", 3.0),
    (0.80, "BAYES_80", 2.0),
    (0.60, "BAYES_60", 1.5),
    (0.40, "BAYES_50", 0.8),
    (0.20, "BAYES_20", -0.001),
    (0.05, "BAYES_05", -0.5),
    (0.01, "BAYES_01", -1.5),
    (0.00, "BAYES_00", -1.9),
)


def band(probability: float) -> tuple[str, float]:
    for floor, name, points in BANDS:
        if probability >= floor:
            return name, points
    return BANDS[-1][1], BANDS[-1][2]
