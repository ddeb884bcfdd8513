"""Reading the dead-letter topic: counts by reason, listings, and re-publishing after a fix.

Every message a worker could not process lands on ``crm.deadletter`` as a
:class:`~streamcrm.core.records.DeadLetter`: where it came from (topic, partition, offset, key),
why (``reason_code`` for counting, ``reason`` for people) and its payload, exactly, up to
16 KiB. ``streamcrm deadletter`` summarises them by reason; with ``--republish`` it sends the
chosen ones back to their source topic (after the producer or the code was fixed), with their
original key, so they meet their customer's other events on the same partition again.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from streamcrm.core.events import decode_event, decode_privacy_event
from streamcrm.core.records import DeadLetter
from streamcrm.errors import InvalidEventError


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters a command acts on; an unset field matches everything."""

    reason_code: str | None = None
    source_topic: str | None = None
    positions: frozenset[tuple[str, int, int]] = frozenset()
    """(topic, partition, offset) of the messages wanted; empty = any."""

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason_code is not None and letter.reason_code != self.reason_code:
            return False
        if self.source_topic is not None and letter.source_topic != self.source_topic:
            return False
        position = (letter.source_topic, letter.partition, letter.offset)
        return not self.positions or position in self.positions


def parse_letters(values: Iterable[bytes | None]) -> tuple[list[DeadLetter], int]:
    """The dead letters among the dead-letter topic's record values, and how many values were
    not dead letters (written there by something else, or damaged): those are counted and
    skipped, never a crash. Tombstones (None) are neither.

    A letter whose payload does not come back whole (``raw`` not base64 where it says so, or
    an uncut payload of another size than ``raw_size``) is damaged too: re-publishing it
    would send bytes that are not the message.

    >>> letters, unreadable = parse_letters([b"not json", None, b'{"a": 1}'])
    >>> (letters, unreadable)
    ([], 2)
    """
    letters: list[DeadLetter] = []
    unreadable = 0
    for value in values:
        if value is None:
            continue
        try:
            letter = DeadLetter.model_validate_json(value)
        except ValidationError:
            unreadable += 1
            continue
        if _payload_intact(letter):
            letters.append(letter)
        else:
            unreadable += 1
    return letters, unreadable


def _payload_intact(letter: DeadLetter) -> bool:
    """Whether the letter's payload decodes (strictly: ``payload`` would skip stray
    characters in base64) to as many bytes as it says it holds.

    >>> _payload_intact(DeadLetter(source_topic="t", partition=0, offset=0, key=None,
    ...     error_type="E", reason="r", raw="abc", raw_encoding="base64", raw_size=2))
    False
    """
    try:
        if letter.raw_encoding == "base64":
            size = len(base64.b64decode(letter.raw, validate=True))
        else:
            size = len(letter.raw.encode("utf-8"))
    except ValueError:  # binascii.Error, non-ASCII base64, UnicodeEncodeError
        return False
    return letter.raw_truncated or size == letter.raw_size


def parse_position(text: str) -> tuple[str, int, int]:
    """``TOPIC:PARTITION:OFFSET`` → a position (topic names may hold dots, not colons).

    >>> parse_position("crm.purchases:2:1041")
    ('crm.purchases', 2, 1041)
    """
    topic, partition, offset = text.rsplit(":", 2)
    return topic, int(partition), int(offset)


@dataclass(frozen=True)
class ReasonSummary:
    """How many letters share a reason code, and one reason text as an example."""

    reason_code: str
    count: int
    example: str


def summarise(letters: Iterable[DeadLetter]) -> list[ReasonSummary]:
    """Letters counted by reason code, most frequent first (ties by code).

    >>> def letter(code, reason):
    ...     return DeadLetter.of(b"{", source_topic="t", partition=0, offset=0, key=None,
    ...         error_type="E", reason_code=code, reason=reason)
    >>> [(s.reason_code, s.count) for s in summarise(
    ...     [letter("not_json", "a"), letter("too_large", "b"), letter("not_json", "c")])]
    [('not_json', 2), ('too_large', 1)]
    """
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for letter in letters:
        counts[letter.reason_code] += 1
        examples.setdefault(letter.reason_code, letter.reason)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [ReasonSummary(code, count, examples[code]) for code, count in ordered]


@dataclass(frozen=True)
class RepublishReport:
    """What ``republish`` did: sent, of which now valid, and letters it could not send
    (``truncated``: a cut payload; ``damaged``: a payload or key that does not decode)."""

    sent: int = 0
    now_valid: int = 0
    truncated: int = 0
    damaged: int = 0


def republish(
    letters: Sequence[DeadLetter],
    send: Callable[[str, bytes | None, bytes], None],
) -> RepublishReport:
    """Send each letter's payload back to its source topic with its original key.

    ``send(topic, key, value)`` publishes one message. A letter whose payload was cut
    (``raw_truncated``) is not sent: part of a message is not the message; nor is one whose
    payload or key cannot be turned back into bytes (``damaged``; :func:`parse_letters`
    leaves such letters out already). ``now_valid`` counts the payloads that pass today's
    validation for their topic (the rest will be dead-lettered again, with the then current
    reason).
    """
    sent = now_valid = truncated = damaged = 0
    for letter in letters:
        if letter.raw_truncated:
            truncated += 1
            continue
        try:
            payload = letter.payload()
            key = letter.key.encode() if letter.key else None
        except ValueError:  # binascii.Error, UnicodeEncodeError
            damaged += 1
            continue
        send(letter.source_topic, key, payload)
        sent += 1
        now_valid += _passes_validation(payload, letter.source_topic)
    return RepublishReport(sent=sent, now_valid=now_valid, truncated=truncated, damaged=damaged)


def _passes_validation(payload: bytes, topic: str) -> bool:
    """Whether ``payload`` is an event the worker would take from ``topic`` today (its key
    aside): an erasure or a consent on the privacy topic, an input event elsewhere.

    >>> erasure = (b'{"type": "erasure", "event_id": "e", "customer_id": "c",'
    ...     b' "occurred_at": "2026-03-01T00:00:00Z"}')
    >>> _passes_validation(erasure, "crm.privacy"), _passes_validation(erasure, "crm.support")
    (True, False)
    """
    try:
        # The topic's kind is its name's last dot-separated part, as for decode_event.
        if topic.rsplit(".", 1)[-1] == "privacy":
            decode_privacy_event(payload)
        else:
            decode_event(payload, topic)
    except InvalidEventError:
        return False
    return True


def format_summary(summaries: Sequence[ReasonSummary], total: int) -> str:
    """A table of reason codes, counts and one example reason each."""
    if not summaries:
        return "no dead letters"
    width = max(len(s.reason_code) for s in summaries)
    lines = [f"{total} dead letters", f"{'reason':<{width}}  {'count':>7}  example"]
    lines += [
        f"{s.reason_code:<{width}}  {s.count:>7}  {_shorten(s.example, 100)}" for s in summaries
    ]
    return "\n".join(lines)


def format_letters(letters: Sequence[DeadLetter]) -> str:
    """One line per letter: position, reason code, size and reason."""
    return "\n".join(
        f"{letter.source_topic}:{letter.partition}:{letter.offset}  {letter.reason_code}"
        f"  {letter.raw_size} B{' (cut)' if letter.raw_truncated else ''}"
        f"  {_shorten(letter.reason, 120)}"
        for letter in letters
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
