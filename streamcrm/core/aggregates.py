"""Population aggregates over customers' latest scores: what an analyst looks at first.

Pure: it takes scores (from any store) and returns a summary.

>>> summary = summarise([])
>>> summary.customers
0
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamcrm.core.records import CustomerScore

DISTRIBUTION_FIELDS: tuple[str, ...] = (
    "churn_probability",
    "health",
    "loyalty",
    "clv_discounted",
    "monetary",
    "satisfaction_mean",
)


@dataclass(frozen=True)
class Distribution:
    """Count, mean and quartiles of one score over the customers that have it."""

    count: int
    mean: float
    p25: float
    median: float
    p75: float


@dataclass(frozen=True)
class PopulationSummary:
    """Customers, cancellations, segment shares, RFM codes and score distributions."""

    customers: int
    cancelled: int = 0
    segment_shares: dict[str, float] = field(default_factory=dict)
    rfm_codes: dict[str, int] = field(default_factory=dict)
    distributions: dict[str, Distribution] = field(default_factory=dict)
    newest_as_of: str | None = None


def summarise(scores: Iterable[CustomerScore]) -> PopulationSummary:
    """Aggregate the latest score of each customer.

    Satisfaction is averaged over customers who rated anything (a customer without ratings
    has no satisfaction, not a neutral one).
    """
    latest = list(scores)
    if not latest:
        return PopulationSummary(customers=0)
    segments = Counter(score.segment_name for score in latest)
    rfm = Counter(f"{s.rfm_recency}{s.rfm_frequency}{s.rfm_monetary}" for s in latest)
    distributions = {}
    for name in DISTRIBUTION_FIELDS:
        values = [v for s in latest if (v := getattr(s, name)) is not None]
        if values:
            distributions[name] = _distribution(values)
    return PopulationSummary(
        customers=len(latest),
        cancelled=sum(score.cancelled for score in latest),
        segment_shares={name: count / len(latest) for name, count in segments.most_common()},
        rfm_codes=dict(rfm.most_common(10)),
        distributions=distributions,
        newest_as_of=max(score.as_of for score in latest).isoformat(),
    )


def _distribution(values: list[float]) -> Distribution:
    if len(values) == 1:
        only = float(values[0])
        return Distribution(count=1, mean=only, p25=only, median=only, p75=only)
    p25, median, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return Distribution(
        count=len(values), mean=statistics.fmean(values), p25=p25, median=median, p75=p75
    )


def format_summary(summary: PopulationSummary) -> str:
    """The summary as a few lines of text."""
    if not summary.customers:
        return "no customers scored yet"
    lines = [
        f"customers {summary.customers:,}   cancelled {summary.cancelled:,}   "
        f"newest event {summary.newest_as_of}",
        "segments  "
        + ", ".join(f"{name} {share:.0%}" for name, share in summary.segment_shares.items()),
        "top RFM codes  " + ", ".join(f"{code}: {n}" for code, n in summary.rfm_codes.items()),
        f"{'score':<20}{'customers':>10}{'mean':>12}{'p25':>12}{'median':>12}{'p75':>12}",
    ]
    for name, d in summary.distributions.items():
        lines.append(
            f"{name:<20}{d.count:>10,}{d.mean:>12,.3f}{d.p25:>12,.3f}{d.median:>12,.3f}"
            f"{d.p75:>12,.3f}"
        )
    return "\n".join(lines)
