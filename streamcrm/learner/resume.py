"""Where ``streamcrm learner`` starts reading the model-updates topic: a pure decision.

The checkpoint is the learner's only memory. It holds the models *and* the offset of the
first model-updates message they have not learned, written together in one atomic Redis step
(:meth:`streamcrm.store.StateStore.save_model`). Starting from that offset, every message is
in exactly one of two places: learned into the stored blob (before the offset) or still to be
read (from it on). A crash at any moment loses nothing the checkpoint acknowledged and learns
nothing twice: what the dead process learned after its last checkpoint was never saved, and it
is read again.

Kafka's consumer-group offsets cannot give this. A commit is a second write, to another
system, at another moment than the checkpoint: committed ahead of the checkpoint, a crash
loses the updates in between; behind it, they are learned twice. The learner still commits
the checkpoint's offset to its consumer group, so lag tools see how far it is, but it never
reads the commit back while it has a position of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from streamcrm.store import InputPosition

Start = int | Literal["earliest", "latest"]
"""An offset to seek to, or one end of the log."""


@dataclass(frozen=True)
class ResumePoint:
    """Where to start reading, and why (for the start-up log line)."""

    start: Start
    why: str


def position_field(topic: str, topic_id: str | None, partition: int = 0) -> str:
    """The field a checkpoint keeps its learner's next offset under: the topic, its id (a
    re-created topic restarts its offsets at 0) and the partition.

    >>> position_field("crm.model-updates", "Zq9", 0)
    'crm.model-updates|Zq9|0'
    """
    return InputPosition(topic, topic_id, partition, 0).mark_field


def resume_point(
    checkpoint_exists: bool,
    next_offsets: Mapping[str, int],
    field: str,
    committed_by_workers: int | None,
) -> ResumePoint:
    """Where a learner resumes, given what the store holds and the workers' commit.

    ``checkpoint_exists``: whether a model checkpoint is stored; ``next_offsets``: the
    positions stored with it; ``field``: this topic partition's :func:`position_field`;
    ``committed_by_workers``: the scoring workers' consumer-group offset on the topic (an
    in-worker learner's Faust commit), None if there is none.

    >>> resume_point(True, {"u|id|0": 42}, "u|id|0", None).start
    42
    >>> resume_point(False, {}, "u|id|0", None).start
    'earliest'
    """
    if field in next_offsets:
        return ResumePoint(next_offsets[field], "the checkpoint's own position")
    if not checkpoint_exists:
        return ResumePoint("earliest", "no checkpoint yet: every update is still to learn")
    if next_offsets:
        # Positions of another topic id: the topic was deleted and created again (or the
        # broker kept nothing), so everything on it now came after the checkpoint.
        return ResumePoint(
            "earliest", "the checkpoint's position is on an older topic of that name"
        )
    # A checkpoint an in-worker learner wrote (it keeps no position): its Faust commit is the
    # best guess there is, which may learn a few updates twice or miss a few, once.
    if committed_by_workers is not None:
        return ResumePoint(
            committed_by_workers,
            "checkpoint from an in-worker learner: from the workers' committed offset",
        )
    return ResumePoint(
        "latest",
        "checkpoint from an in-worker learner, nothing committed: from the end (reading the"
        " topic again would learn its updates twice)",
    )
