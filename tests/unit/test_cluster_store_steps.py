"""A batch on a Redis Cluster is written in steps, one Lua script per run of writes of one
partition: a failover between two steps may drop the earlier ones, and the later ones must
then be refused (``STATE_BEHIND``), not made over the lost writes.

No Redis here: a fake cluster client runs the part of ``WRITE_SCRIPT`` that decides (the marks
to hold, the mark's move) on a dict of offsets hashes. The store's contract tests run the real
script on a real Redis Cluster.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from streamcrm.store import (
    InputPosition,
    PendingWrite,
    RedisClusterStateStore,
    SaveResult,
    offsets_key,
)
from streamcrm.store.redis import WRITE_SCRIPT

TOPIC = "crm.support"


class FakeCluster:
    """The offsets hashes of a cluster whose master of partition 0 dies after the first
    step of a batch; its replica, which lacks that step's writes, takes the next ones."""

    def __init__(self) -> None:
        self.offsets: dict[str, dict[str, int]] = {}
        self.steps = 0
        self.replica: dict[str, dict[str, int]] | None = None

    def register_script(self, script: str) -> Any:
        async def run(keys: Sequence[str], args: Sequence[Any]) -> list[int]:
            assert script == WRITE_SCRIPT, "only batches of writes are made here"
            if self.steps == 0:
                self.replica = copy.deepcopy(self.offsets)  # stops following here
            elif self.steps == 1 and self.replica is not None:
                self.offsets = self.replica  # the master died with the first step's writes
            self.steps += 1
            return self._write(keys, args)

        return run

    def _write(self, keys: Sequence[str], args: Sequence[Any]) -> list[int]:
        results = []
        for w in range(len(keys) // 6):
            a = 1 + 13 * w  # ARGV[a + k] of the script is args[a + k - 1]
            offsets = self.offsets.setdefault(keys[6 * w], {})
            field, offset, hold = args[a], int(args[a + 1]), args[a + 2]
            result = 1
            marks = json.loads(hold) if hold else []
            for i in range(0, len(marks), 2):
                held = offsets.get(marks[i])
                if held is None or held < int(marks[i + 1]):
                    result = 3
                    break
            if result == 1 and field:
                if offsets.get(field, -1) >= offset:
                    result = 0
                else:
                    offsets[field] = offset
            results.append(result)
            if result != 1:
                break
        return results


def mark_move(partition: int, offset: int) -> PendingWrite:
    return PendingWrite(InputPosition(TOPIC, None, partition, offset, previous=4))


async def test_a_step_after_a_failover_that_dropped_the_batchs_earlier_steps_is_refused() -> None:
    cluster = FakeCluster()
    store = RedisClusterStateStore(cluster, "t")  # type: ignore[arg-type]
    for partition in (0, 1):
        field = InputPosition(TOPIC, None, partition, 0).mark_field
        cluster.offsets[offsets_key("t", partition)] = {field: 4}

    # Three steps: partition 0, 1, 0. The first is made on the master only.
    results = await store.save_batch([mark_move(0, 5), mark_move(1, 5), mark_move(0, 6)])

    assert results == [SaveResult.APPLIED, SaveResult.APPLIED, SaveResult.STATE_BEHIND]
    field = InputPosition(TOPIC, None, 0, 0).mark_field
    assert cluster.offsets[offsets_key("t", 0)][field] == 4  # not moved past the lost write


async def test_steps_of_a_batch_on_a_cluster_that_stays_whole_are_all_made() -> None:
    cluster = FakeCluster()
    store = RedisClusterStateStore(cluster, "t")  # type: ignore[arg-type]
    for partition in (0, 1):
        field = InputPosition(TOPIC, None, partition, 0).mark_field
        cluster.offsets[offsets_key("t", partition)] = {field: 4}
    cluster.steps = 2  # no failover

    results = await store.save_batch([mark_move(0, 5), mark_move(1, 5), mark_move(0, 6)])

    assert results == [SaveResult.APPLIED] * 3
