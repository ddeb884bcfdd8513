"""Event time as one worker has seen it: the newest event time applied, overall and per input
topic partition, and the watermarks derived from it (every watermark is computed here).

Pure bookkeeping: no I/O (the times a restarted worker resumes from are handed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

Source = tuple[str, int]
"""An input topic partition: (topic, partition)."""


class EventTime:
    """The newest event times applied, and the watermarks they give.

    With ``newest`` the newest event time applied and ``lateness`` the allowed lateness::

        watermark = newest − lateness

    Every event up to the watermark is taken to be in: it closes churn windows and moves
    quiet customers' re-scores on.

    >>> from datetime import UTC
    >>> time = EventTime(timedelta(days=2))
    >>> time.note(datetime(2026, 1, 10, tzinfo=UTC), ("crm.purchases", 0))
    >>> time.watermark
    datetime.datetime(2026, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)
    """

    def __init__(self, lateness: timedelta) -> None:
        self.lateness = lateness
        self.newest: datetime | None = None
        """The newest event time applied (from any input partition)."""
        self._by_source: dict[Source, datetime] = {}

    def note(self, occurred_at: datetime, source: Source | None) -> None:
        """An event of ``occurred_at`` was applied (from ``source``, if known)."""
        if self.newest is None or occurred_at > self.newest:
            self.newest = occurred_at
        if source is not None:
            known = self._by_source.get(source)
            if known is None or occurred_at > known:
                self._by_source[source] = occurred_at

    def resume(self, stored: Mapping[str, datetime]) -> None:
        """Take the newest event times a store kept per offset-mark field
        (``topic|topic id|partition``), so a restarted worker starts from its watermark."""
        for field, newest in stored.items():
            topic, _, partition = field.rsplit("|", 2)
            self.note(newest, (topic, int(partition)))

    def rewind(self, stored: Mapping[str, datetime]) -> None:
        """Take the store's newest event times (as :meth:`resume`), lower ones included, and
        forget those of input partitions the store has none of: after Redis lost writes, the
        times of the lost events must not bound what is settled until those events are
        applied again (a topic partition whose every write was lost has applied nothing, and
        holds its partition's watermark back entirely until it has).

        >>> from datetime import UTC
        >>> time = EventTime(timedelta(days=2))
        >>> time.note(datetime(2026, 3, 1, tzinfo=UTC), ("crm.purchases", 0))
        >>> time.note(datetime(2026, 3, 9, tzinfo=UTC), ("crm.feedback", 0))
        >>> time.rewind({"crm.purchases|-|0": datetime(2026, 2, 1, tzinfo=UTC)})
        >>> time.newest, time.for_partition(0, ["crm.feedback"])
        (datetime.datetime(2026, 2, 1, 0, 0, tzinfo=datetime.timezone.utc), None)
        """
        self._by_source = {}
        for field, newest in stored.items():
            topic, _, partition = field.rsplit("|", 2)
            self._by_source[(topic, int(partition))] = newest
        self.newest = max(self._by_source.values()) if self._by_source else None

    @property
    def watermark(self) -> datetime | None:
        """``newest − lateness``; None before any event was applied."""
        if self.newest is None:
            return None
        return self.newest - self.lateness

    def for_partition(
        self, partition: int, holding_back: Iterable[str], newest: datetime | None = None
    ) -> datetime | None:
        """Event time up to which every event of one input partition's customers is taken
        to be in, so their quiet spells can be scored: the watermark, held back by each input
        topic whose partition still has messages to apply, to that topic partition's newest
        applied event time less the allowed lateness (None: such a topic partition has
        applied nothing yet).

        A topic partition with nothing more to deliver does not hold the watermark back, so a
        quiet partition's customers are still re-scored; one that is behind does, so a
        customer is never re-scored as of a moment their unread events come before. That is
        what makes re-scores the same in a replay as live (docs/scores.md), and what lets
        attribution and alert outcomes settle exactly while one topic runs ahead of another
        (docs/marketing.md). ``newest``: the newest event time to start from, if not
        :attr:`newest` (a batch moves it on before its events are applied).
        """
        bound = self.newest if newest is None else newest
        if bound is None:
            return None
        for topic in holding_back:
            newest = self._by_source.get((topic, partition))
            if newest is None:
                return None
            bound = min(bound, newest)
        return bound - self.lateness
