"""Does acting on an alert keep customers? Retention after alerts, acted on or held out.

Pure, and in event time. A share of churn alerts is marked **control** (downstream alerting
does not act on those; the mark is a deterministic hash of customer and alert, see
:func:`streamcrm.core.experiments.is_control`); the others are **acted** on. For each alert the
customer's memory waits until its outcome is settled, then counts it once:

    retained  ⇔  a purchase at a time in (alert.at, alert.at + window]

An alert's outcome is **settled** when the watermark (the event time up to which every event
is taken to be in) reaches ``alert.at + window``: no purchase still to come can change it. Only
settled alerts are counted, so early figures are not biased towards quick returners.

Figures are kept per (alert kind, segment, group) with group ``acted`` or ``control``; the
uplift of acting is::

    uplift = retained_acted / alerts_acted − retained_control / alerts_control

(estimated with its interval by :func:`streamcrm.core.experiments.retention_uplift`). As with
campaign figures (:mod:`streamcrm.core.marketing`), settling gives deltas, and the running sums
of the deltas are the figures of every settled alert, whatever the order events arrived in
before it settled.

>>> from datetime import datetime, timedelta, UTC
>>> day = datetime(2026, 3, 1, tzinfo=UTC)
>>> memory = record_alert(AlertOutcomes(), AlertSent("a1", "churn_risk", "loyal", day, False))
>>> memory = record_purchase(memory, day + timedelta(days=10))
>>> later = day + timedelta(days=40)
>>> memory, settled = settle(memory, later, timedelta(days=30), later)
>>> settled.groups[RetentionKey("churn_risk", "loyal", "acted")]
RetentionFigures(alerts=1, retained=1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal

Group = Literal["acted", "control"]
RETENTION_FIELD = "~retention"
"""The prefix of retention figures among a partition's stored figures."""


@dataclass(frozen=True, order=True)
class RetentionKey:
    """Where a settled alert is counted."""

    kind: str
    segment: str
    group: Group


@dataclass(frozen=True)
class AlertSent:
    """An alert streamcrm raised about the customer, and whether it was held out."""

    alert_id: str
    kind: str
    segment: str
    at: datetime
    control: bool

    @property
    def key(self) -> RetentionKey:
        return RetentionKey(self.kind, self.segment, "control" if self.control else "acted")


@dataclass(frozen=True)
class RetentionFigures:
    """Settled alerts and how many of them were followed by a purchase within the window."""

    alerts: int = 0
    retained: int = 0

    def __add__(self, other: RetentionFigures) -> RetentionFigures:
        return RetentionFigures(self.alerts + other.alerts, self.retained + other.retained)

    @property
    def rate(self) -> float | None:
        """retained / alerts; None before any alert settled."""
        return self.retained / self.alerts if self.alerts else None


@dataclass(frozen=True)
class RetentionTally:
    """Figures per (kind, segment, group): a delta, a partition's sum, or everything."""

    groups: Mapping[RetentionKey, RetentionFigures] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __add__(self, other: RetentionTally) -> RetentionTally:
        summed = dict(self.groups)
        for key, figures in other.groups.items():
            summed[key] = summed.get(key, RetentionFigures()) + figures
        return RetentionTally(MappingProxyType(summed))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetentionTally) and dict(self.groups) == dict(other.groups)

    def __hash__(self) -> int:
        return hash(frozenset(self.groups.items()))

    def increments(self) -> tuple[tuple[str, int], ...]:
        """The tally as store increments, ``("~retention|{kind}|{segment}|{group}|{figure}",
        amount)``: the ``~`` keeps them apart from campaign figures in the same hash.

        >>> key = RetentionKey("churn_risk", "new", "control")
        >>> [name for name, _ in RetentionTally({key: RetentionFigures(2, 1)}).increments()]
        ['~retention|churn_risk|new|control|alerts', '~retention|churn_risk|new|control|retained']
        """
        return tuple(
            (f"{RETENTION_FIELD}|{key.kind}|{key.segment}|{key.group}|{name}", amount)
            for key, figures in sorted(self.groups.items())
            for name, amount in (("alerts", figures.alerts), ("retained", figures.retained))
            if amount
        )

    @classmethod
    def from_fields(cls, fields: Mapping[str, int]) -> RetentionTally:
        """The tally whose :meth:`increments` summed to the ``~retention`` fields of
        ``fields`` (other fields are left out)."""
        groups: dict[RetentionKey, dict[str, int]] = {}
        for name, amount in fields.items():
            if not name.startswith(RETENTION_FIELD + "|"):
                continue
            kind, rest = name.removeprefix(RETENTION_FIELD + "|").split("|", 1)
            segment, group, figure = rest.rsplit("|", 2)
            key = RetentionKey(kind, segment, "control" if group == "control" else "acted")
            groups.setdefault(key, {})[figure] = amount
        return cls(
            MappingProxyType(
                {
                    key: RetentionFigures(figures.get("alerts", 0), figures.get("retained", 0))
                    for key, figures in groups.items()
                }
            )
        )

    def acted_and_control(
        self, kind: str, segment: str | None = None
    ) -> tuple[RetentionFigures, RetentionFigures]:
        """The acted and control figures of one alert kind, in one segment or all."""
        acted, control = RetentionFigures(), RetentionFigures()
        for key, figures in self.groups.items():
            if key.kind != kind or (segment is not None and key.segment != segment):
                continue
            if key.group == "acted":
                acted = acted + figures
            else:
                control = control + figures
        return acted, control


@dataclass(frozen=True)
class AlertOutcomes:
    """A customer's alerts whose outcome is not yet settled, and the purchase times that may
    still settle one (not the alert rules' hysteresis, which is
    :class:`streamcrm.core.alerts.AlertMemory`)."""

    pending: tuple[AlertSent, ...] = ()
    """Sorted by (time, id)."""
    purchases: tuple[datetime, ...] = ()
    """Sorted, distinct."""


def record_alert(memory: AlertOutcomes, alert: AlertSent) -> AlertOutcomes:
    """Remember an alert until it settles (a repeated pending id changes nothing). An alert
    is recorded in the same atomic step that raised it, so it is recorded once."""
    if any(a.alert_id == alert.alert_id for a in memory.pending):
        return memory
    pending = tuple(sorted((*memory.pending, alert), key=lambda a: (a.at, a.alert_id)))
    return replace(memory, pending=pending)


def record_purchase(memory: AlertOutcomes, at: datetime) -> AlertOutcomes:
    """Remember a purchase time (it may settle a pending alert as retained)."""
    if at in memory.purchases:
        return memory
    return replace(memory, purchases=tuple(sorted((*memory.purchases, at))))


def settle(
    memory: AlertOutcomes, watermark: datetime, window: timedelta, settled_before: datetime
) -> tuple[AlertOutcomes, RetentionTally]:
    """Count every pending alert whose window closed by ``watermark``; the memory without
    them and the delta.

    ``settled_before``: the earliest event time a new event of the customer may still have
    (their newest event time less the allowed lateness). Purchases before both it and the
    earliest pending alert can count for no alert still to come, and go.
    """
    counted: dict[RetentionKey, RetentionFigures] = {}
    still: list[AlertSent] = []
    for alert in memory.pending:
        if alert.at + window > watermark:
            still.append(alert)
            continue
        retained = any(alert.at < at <= alert.at + window for at in memory.purchases)
        counted[alert.key] = counted.get(alert.key, RetentionFigures()) + RetentionFigures(
            1, int(retained)
        )
    earliest = min([a.at for a in still] + [settled_before])
    kept = AlertOutcomes(
        pending=tuple(still), purchases=tuple(at for at in memory.purchases if at > earliest)
    )
    return kept, RetentionTally(MappingProxyType(counted))


def summed(tallies: Iterable[RetentionTally]) -> RetentionTally:
    """The sum of several tallies (every partition's, when read)."""
    total = RetentionTally()
    for part in tallies:
        total = total + part
    return total
