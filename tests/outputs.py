"""What the pipeline wrote to an outbox, and output topics in memory to publish it to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from streamcrm.core.records import Alert, CustomerScore
from streamcrm.store import OutboxRecord, StateStore


async def outbox_outputs(
    store: StateStore, partition: int = 0
) -> list[tuple[CustomerScore, list[Alert]]]:
    """Every score waiting in ``partition``'s outbox, oldest first, with the alerts that
    follow it there (the alerts it raised)."""
    outputs: list[tuple[CustomerScore, list[Alert]]] = []
    for record in await store.outbox(partition, 1_000_000):
        if record.kind == "scores":
            outputs.append((CustomerScore.model_validate_json(record.value), []))
        else:
            assert outputs, f"an alert with no score before it: {record}"
            outputs[-1][1].append(Alert.model_validate_json(record.value))
    return outputs


class FakeOutputs:
    """Output topics in memory: one list per topic partition; ``fail_after`` sends crash."""

    def __init__(self, send_delay_s: float = 0.0) -> None:
        self.logs: dict[tuple[str, int], list[OutboxRecord]] = {}
        self.fail_after: int | None = None
        self.send_delay_s = send_delay_s
        """How long each send yields (a broker's acknowledgement takes a while)."""
        self.end_offset_requests = 0

    def topic_partition(self, record: OutboxRecord) -> tuple[str, int]:
        return (record.kind, hash(record.key) % 2)

    async def end_offsets(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        self.end_offset_requests += 1
        return {tp: len(self.logs.get(tp, [])) for tp in partitions}

    async def fingerprints_since(self, partition: tuple[str, int], offset: int) -> set[str]:
        return {r.fingerprint for r in self.logs.get(partition, [])[offset:]}

    async def send_all(self, records: Sequence[OutboxRecord]) -> None:
        for n, record in enumerate(records):
            await asyncio.sleep(self.send_delay_s)
            if self.fail_after is not None and n >= self.fail_after:
                raise ConnectionError("killed")
            self.logs.setdefault(self.topic_partition(record), []).append(record)

    def ids(self) -> list[str]:
        return sorted(r.record_id for log in self.logs.values() for r in log)
