"""The Redis store on a Redis Cluster: the layout, scripts and guarantees of
:mod:`streamcrm.store.redis`, on redis-py's cluster client.

Every key a Lua step touches carries one input partition's hash tag (``{pN}``), so each step
runs on the master that owns that partition's slot. What a single Redis did in one step
across partitions is split here by partition: a batch's writes are made in runs of
consecutive writes of one partition, each run one atomic script on its slot's master,
stopping (as in one step) at the first write refused, so the writes made are still a prefix
of the batch. Readers of every partition (block list, audit, newest event times) send one
command per partition in a pipeline, which redis-py spreads over the masters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from itertools import groupby
from typing import Any

from redis.asyncio.cluster import RedisCluster

from streamcrm.store.base import PendingWrite
from streamcrm.store.redis import DEFAULT_PARTITIONS, RedisStateStore


class RedisClusterStateStore(RedisStateStore):
    """:class:`RedisStateStore` on a Redis Cluster (see the module docstring)."""

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str = "streamcrm",
        retention: timedelta | None = None,
        privacy_key: bytes | None = None,
        client_options: Mapping[str, Any] | None = None,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> RedisClusterStateStore:
        """A store on a new cluster client for ``url``, any one node of the cluster (the
        client discovers the others); ``client_options`` as for a single Redis (ACL user,
        password, TLS files; no key password: redis-py's cluster client takes none)."""
        client = RedisCluster.from_url(url, **(client_options or {}))
        return cls(client, namespace, retention, privacy_key, partitions)

    def _steps(self, writes: Sequence[PendingWrite]) -> list[Sequence[PendingWrite]]:
        """Runs of consecutive writes of one partition: one slot each."""
        return [list(run) for _, run in groupby(writes, key=self._partition_of_write)]
