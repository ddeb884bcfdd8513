"""Malformed messages on crm.feedback, crm.support, crm.privacy and crm.marketing, against a
real worker, Tansu broker and redis-server, tested as those on crm.purchases are
(test_fault_inputs.py).

Every malformed message reaches the dead-letter topic exactly once, with its reason code and
the topic, partition and offset it was read from; every valid event among them is applied
(an erasure erases, a consent lifts the block, a touch reaches the campaign figures) and none
is dead-lettered; a malformed or wrongly keyed erasure erases no one; the worker keeps running
throughout.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from streamcrm.core.events import (
    MAX_KEY_BYTES,
    CancellationEvent,
    Event,
    FeedbackEvent,
    MarketingEvent,
    SupportEvent,
    decode_marketing_event,
)
from streamcrm.core.marketing import Tally, summed
from streamcrm.core.records import Alert
from streamcrm.core.scoring import apply_marketing
from streamcrm.core.state import CustomerState
from streamcrm.services.kafka import ensure_topics, make_producer
from streamcrm.settings import Settings
from streamcrm.store.base import campaigns_key
from tests.conftest import record_fault
from tests.integration.exactness import (
    comparable,
    expected_states,
    lost_and_doubled,
    stored_states,
    wait_until,
)
from tests.integration.worker_harness import (
    TopicReader,
    audit_entries,
    dead_letters,
    erased_count,
    redis_client,
    running_worker,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ANY_REASON = "*"
"""The expected code of rows whose reason code another change is settling (type coercion):
dead-lettered exactly once, whatever the code. An expected code ending in ``*`` is a prefix."""
BAD_TIME = "schema:datetime*"
"""Unparseable times: ``schema:datetime_parsing`` in strict mode, ``..._from_date_parsing``
in lax mode (the coercion change settles which)."""
FUTURE = "2099-01-01T00:00:00Z"
LONG_AGO = "2025-02-01T00:00:00Z"
T_MARKETING = T0 + timedelta(days=61)
"""Marketing events come after every other event of the test (f-2's comeback is at day 60)."""
WAIT_S = 45.0


@dataclass(frozen=True)
class Message:
    """One message to produce; ``expected`` is None for a valid one, else its reason code."""

    label: str
    key: bytes | None
    value: bytes
    expected: str | None = None


@dataclass(frozen=True)
class Sent:
    """A produced message and where the broker put it."""

    message: Message
    topic: str
    partition: int
    offset: int

    @property
    def position(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset


# --- the messages -------------------------------------------------------------------------------


def as_bytes(fields: dict[str, object]) -> bytes:
    return json.dumps(fields).encode()


def valid(event: Event | MarketingEvent) -> Message:
    value = event.model_dump_json().encode()
    return Message(f"valid {event.event_id}", event.customer_id.encode(), value)


def bad(
    label: str, code: str, fields: dict[str, object] | bytes, key: bytes | None = b""
) -> Message:
    """A message to be dead-lettered with ``code``; keyed by the customer it names (by
    ``label`` if none) unless ``key`` says otherwise (None: no key)."""
    value = fields if isinstance(fields, bytes) else as_bytes(fields)
    if key == b"":
        customer = fields.get("customer_id") if isinstance(fields, dict) else None
        key = str(customer).encode() if isinstance(customer, str) else label.encode()
    return Message(label, key, value, code)


def without(fields: dict[str, object], *names: str) -> dict[str, object]:
    return {name: value for name, value in fields.items() if name not in names}


def common_malformed(kind: str, record: dict[str, object], neighbour: str) -> list[Message]:
    """What can go wrong on any topic, made from a valid ``record`` of the topic (a fresh
    event of an existing customer); ``neighbour`` is another existing customer."""
    customer = str(record["customer_id"])

    def fresh(label: str) -> dict[str, object]:
        return {**record, "event_id": f"{kind}-{label}"}

    deep = as_bytes(record)[:-1] + b', "x": ' + b"[" * 3_000 + b"]" * 3_000 + b"}"
    return [
        bad("not-json", "not_json", b"{this is not json"),
        bad("not-utf8", "not_json", b"\xff\xfe\x00\x01"),
        bad("empty", "not_json", b""),
        bad("json-array", "not_object", b"[1, 2, 3]"),
        bad("json-string", "not_object", b'"an event"'),
        bad("json-null", "not_object", b"null"),
        bad("no-type", "schema:union_tag_not_found", without(record, "type")),
        bad("unknown-type", "unknown_event_type", {**record, "type": "teleport"}),
        bad("no-event-id", "schema:missing", without(record, "event_id")),
        bad("no-occurred-at", "schema:missing", without(fresh("no-ts"), "occurred_at")),
        bad("unknown-field", "schema:extra_forbidden", {**fresh("extra"), "coupon": "X"}),
        bad("version-2", "unknown_schema_version", {**fresh("v2"), "schema_version": 2}),
        bad("id-space", "schema:string_pattern_mismatch", {**record, "customer_id": "a b"}),
        bad("id-slash", "schema:string_pattern_mismatch", {**record, "customer_id": "a/b"}),
        bad("id-number", "schema:string_type", {**record, "customer_id": 42}),
        bad("id-too-long", "schema:string_too_long", {**record, "customer_id": "c" * 129}),
        bad("event-id-empty", "schema:string_too_short", {**record, "event_id": ""}),
        bad(
            "ts-month-13",
            BAD_TIME,
            {**fresh("m13"), "occurred_at": "2025-13-01T00:00:00Z"},
        ),
        bad(
            "ts-words",
            BAD_TIME,
            {**fresh("words"), "occurred_at": "yesterday"},
        ),
        bad(
            "ts-naive",
            "schema:timezone_aware",
            {**fresh("naive"), "occurred_at": "2025-03-20T10:00:00"},
        ),
        bad("oversized", "too_large", {**fresh("big"), "note": "x" * 70_000}),
        bad("deep", "too_deep", deep, key=customer.encode()),
        # Valid payloads refused for their key (checked after decoding): none may reach the
        # customer the payload names.
        bad("no-key", "missing_key", fresh("no-key"), key=None),
        bad("other-key", "key_mismatch", fresh("other-key"), key=neighbour.encode()),
        bad("long-key", "key_too_long", fresh("long-key"), key=b"k" * 10_000),
    ]


def feedback_record(customer: str) -> dict[str, object]:
    return {
        "type": "feedback",
        "event_id": f"{customer}-bad",
        "customer_id": customer,
        "occurred_at": "2025-03-20T10:00:00Z",
        "rating": 4,
        "scale": "csat",
        "category": "service",
    }


def support_record(customer: str) -> dict[str, object]:
    return {
        "type": "support",
        "event_id": f"{customer}-bad",
        "customer_id": customer,
        "occurred_at": "2025-03-20T10:00:00Z",
        "ticket_id": "t-bad",
        "action": "opened",
        "channel": "chat",
        "category": "complaint",
    }


def privacy_record(customer: str, kind: str = "erasure") -> dict[str, object]:
    return {
        "type": kind,
        "event_id": f"{kind}-{customer}-bad",
        "customer_id": customer,
        "occurred_at": "2025-04-01T00:00:00Z",
    }


def marketing_record(customer: str, kind: str = "touch") -> dict[str, object]:
    record: dict[str, object] = {
        "type": kind,
        "event_id": f"{kind}-{customer}-bad",
        "customer_id": customer,
        "occurred_at": "2025-05-02T10:00:00Z",
        "touch_id": f"{customer}-t-bad",
    }
    if kind in {"touch", "offer"}:
        record |= {"campaign_id": "spring", "arm": "A", "channel": "email", "cost": 0.25}
    if kind == "offer":
        record["alert_id"] = f"{customer}-e:churn_risk"
    return record


_SUPPORT_ONLY = ("ticket_id", "action", "channel", "category")


def feedback_malformed() -> list[Message]:
    record = feedback_record("f-3")
    cancellation = {**support_record("f-3"), "type": "cancellation"}
    return [
        *common_malformed("feedback", record, neighbour="f-4"),
        bad("csat-6", "schema:value_error", {**record, "rating": 6}),
        bad("csat-0", "schema:value_error", {**record, "rating": 0}),
        bad("nps-11", "schema:value_error", {**record, "rating": 11, "scale": "nps"}),
        bad("nps-minus-1", "schema:value_error", {**record, "rating": -1, "scale": "nps"}),
        bad("rating-4.5", "schema:int_type", {**record, "rating": 4.5}),
        bad("rating-text", ANY_REASON, {**record, "rating": "5"}),
        bad("rating-missing", "schema:missing", without(record, "rating")),
        bad("scale-ces", "schema:literal_error", {**record, "scale": "ces"}),
        bad("category-price", "schema:literal_error", {**record, "category": "price"}),
        bad("comment-2001", "schema:string_too_long", {**record, "comment": "x" * 2001}),
        bad("support-here", "wrong_topic", support_record("f-3")),
        bad("cancellation-here", "wrong_topic", without(cancellation, *_SUPPORT_ONLY)),
        bad("erasure-here", "unknown_event_type", privacy_record("f-3")),
        bad("future", "future_event_time", {**record, "occurred_at": "2099-01-01T00:00:00Z"}),
    ]


def support_malformed() -> list[Message]:
    record = support_record("s-3")
    cancellation = {**without(record, *_SUPPORT_ONLY), "type": "cancellation"}
    return [
        *common_malformed("support", record, neighbour="s-4"),
        bad("action-closed", "schema:literal_error", {**record, "action": "closed"}),
        bad("priority-p0", "schema:literal_error", {**record, "priority": "p0"}),
        bad("channel-fax", "schema:literal_error", {**record, "channel": "fax"}),
        bad("category-none", "schema:literal_error", {**record, "category": None}),
        bad("no-ticket", "schema:missing", without(record, "ticket_id")),
        bad("cancel-extra", "schema:extra_forbidden", {**cancellation, "refund": True}),
        bad("cancel-reason-501", "schema:string_too_long", {**cancellation, "reason": "x" * 501}),
        bad("feedback-here", "wrong_topic", feedback_record("s-3")),
        bad("erasure-here", "unknown_event_type", privacy_record("s-3")),
        bad("future", "future_event_time", {**record, "occurred_at": "2099-01-01T00:00:00Z"}),
    ]


def privacy_malformed() -> list[Message]:
    # Every one names a customer with a state (f-3, f-4, s-3): none of them may be erased.
    record = privacy_record("f-3")
    consent = privacy_record("f-1", "consent")  # f-1 is erased: it must stay blocked
    return [
        *common_malformed("privacy", record, neighbour="f-4"),
        bad("regulation-hipaa", "schema:literal_error", {**record, "regulation": "hipaa"}),
        bad("erasure-name", "schema:extra_forbidden", {**record, "name": "Ann Example"}),
        bad("consent-no-ts", "schema:missing", without(consent, "occurred_at")),
        bad("consent-regulation", "schema:extra_forbidden", {**consent, "regulation": "gdpr"}),
        bad("consent-other-key", "key_mismatch", consent, key=b"f-5"),
        bad("consent-no-key", "missing_key", consent, key=None),
        bad("feedback-here", "unknown_event_type", feedback_record("f-3")),
        bad("support-here", "unknown_event_type", support_record("s-3")),
        bad("erasure-of-s-3-keyed-f-3", "key_mismatch", privacy_record("s-3"), key=b"f-3"),
    ]


def marketing_malformed() -> list[Message]:
    # m-3 and m-4 have touches by the time these arrive (the first half of the valid ones).
    # Those that decode have event ids of their own: a repeated id would hide the reason.
    record = marketing_record("m-3")
    offer = marketing_record("m-3", "offer")
    opened = marketing_record("m-3", "open")
    clicked = marketing_record("m-3", "click")

    def fresh(label: str, fields: dict[str, object]) -> dict[str, object]:
        return {**fields, "event_id": f"marketing-{label}"}

    nan_cost = as_bytes({**record, "event_id": "marketing-nan"}).replace(b"0.25", b"NaN")
    return [
        *common_malformed("marketing", record, neighbour="m-4"),
        bad("type-capital", "unknown_event_type", {**record, "type": "Touch"}),
        bad("type-number", "unknown_event_type", {**record, "type": 1}),
        bad("cost-negative", "schema:greater_than_equal", {**record, "cost": -0.25}),
        bad("cost-text", "schema:float_type", {**record, "cost": "0.25"}),
        bad("cost-bool", "schema:float_type", {**record, "cost": True}),
        bad("cost-null", "schema:float_type", {**record, "cost": None}),
        bad("cost-1e10", "schema:less_than_equal", {**record, "cost": 1e10}),
        bad("cost-nan", "schema:finite_number", nan_cost, key=b"m-3"),
        bad("offer-cost-negative", "schema:greater_than_equal", {**offer, "cost": -1}),
        bad("channel-fax", "schema:literal_error", {**record, "channel": "fax"}),
        bad("channel-chat", "schema:literal_error", {**record, "channel": "chat"}),
        bad("offer-channel-none", "schema:literal_error", {**offer, "channel": None}),
        bad("currency-lower", "schema:string_pattern_mismatch", {**record, "currency": "eur"}),
        bad("currency-xyz", "unknown_currency", {**fresh("xyz", record), "currency": "XYZ"}),
        bad("touch-no-touch-id", "schema:missing", without(record, "touch_id")),
        bad("touch-no-campaign", "schema:missing", without(record, "campaign_id")),
        bad("touch-no-arm", "schema:missing", without(record, "arm")),
        bad("touch-no-channel", "schema:missing", without(record, "channel")),
        bad("touch-id-number", "schema:string_type", {**record, "touch_id": 7}),
        bad("touch-id-slash", "schema:string_pattern_mismatch", {**record, "touch_id": "t/1"}),
        bad("arm-empty", "schema:string_too_short", {**record, "arm": ""}),
        bad("touch-alert-id", "schema:extra_forbidden", {**record, "alert_id": "e:churn_risk"}),
        bad("offer-no-alert", "schema:missing", without(offer, "alert_id")),
        bad("offer-alert-empty", "schema:string_too_short", {**offer, "alert_id": ""}),
        bad("offer-alert-257", "schema:string_too_long", {**offer, "alert_id": "a" * 257}),
        bad("offer-alert-space", "schema:string_pattern_mismatch", {**offer, "alert_id": "a b"}),
        bad("offer-other-key", "key_mismatch", fresh("offer-key", offer), key=b"m-4"),
        bad("open-no-touch-id", "schema:missing", without(opened, "touch_id")),
        bad("open-campaign", "schema:extra_forbidden", {**opened, "campaign_id": "spring"}),
        bad("open-no-key", "missing_key", fresh("open-no-key", opened), key=None),
        bad("click-no-touch-id", "schema:missing", without(clicked, "touch_id")),
        bad("click-cost", "schema:extra_forbidden", {**clicked, "cost": 0.25}),
        bad("click-no-ts", "schema:missing", without(clicked, "occurred_at")),
        bad("purchase-here", "unknown_event_type", {**support_record("m-3"), "type": "purchase"}),
        bad("feedback-here", "unknown_event_type", feedback_record("m-3")),
        bad("erasure-here", "unknown_event_type", privacy_record("m-3")),
        # A touch dated ahead of the clock would make every later touch of m-3 late.
        bad("future", "future_event_time", {**fresh("future", record), "occurred_at": FUTURE}),
        # Valid, but older than m-3's attribution horizon: counted in the state, not applied.
        bad("late", "late_event", {**fresh("late", record), "occurred_at": LONG_AGO}),
    ]


def valid_marketing(customers: Sequence[str]) -> list[MarketingEvent]:
    """Touches and retention offers first, then opens, clicks and second touches: every
    customer has a touch before the malformed messages (which name them) arrive. Dated after
    every other event of the test, and all within hours of each other: none is late, however
    far the other topics have moved the partitions' event time."""
    events: list[MarketingEvent] = []
    for n in range(5):
        for i, customer in enumerate(customers):
            occurred_at = T_MARKETING + timedelta(hours=3 * n, minutes=i)
            common = {
                "event_id": f"{customer}-mk-{n}",
                "customer_id": customer,
                "occurred_at": occurred_at.isoformat(),
            }
            sent = {"campaign_id": "spring", "arm": "AB"[i % 2], "channel": "email"}
            fields: dict[str, object]
            match n:
                case 0 | 4:
                    fields = {**common, "type": "touch", "touch_id": f"{customer}-t-{n}", **sent}
                    fields["cost"] = 0.25 if n == 0 else 0
                case 1:
                    fields = {
                        **common,
                        "type": "offer",
                        "touch_id": f"{customer}-t-1",
                        "campaign_id": "winback",
                        "arm": "offer",
                        "channel": ("sms", "push", "in_app", "mail", "phone")[i % 5],
                        "alert_id": f"{customer}-e:churn_risk",
                        "cost": 1.5,
                        "currency": "EUR",
                    }
                case 2:
                    fields = {**common, "type": "open", "touch_id": f"{customer}-t-0"}
                case _:
                    fields = {**common, "type": "click", "touch_id": f"{customer}-t-{i % 2}"}
            events.append(decode_marketing_event(as_bytes(fields)))
    return events


def valid_feedback(customers: Sequence[str]) -> list[FeedbackEvent]:
    events = []
    for i, customer in enumerate(customers):
        for n in range(4):
            nps = n % 2 == 1
            events.append(
                FeedbackEvent(
                    event_id=f"{customer}-fb-{n}",
                    customer_id=customer,
                    occurred_at=T0 + timedelta(days=i + 3 * n, hours=n),
                    rating=(i + 3 * n) % 11 if nps else 1 + (i + n) % 5,
                    scale="nps" if nps else "csat",
                    category=("product", "service", "brand")[(i + n) % 3],
                    comment="fine" if n == 0 else None,
                )
            )
    return events


def valid_support(customers: Sequence[str]) -> list[Event]:
    events: list[Event] = []
    for i, customer in enumerate(customers):
        opened = T0 + timedelta(days=i)
        steps = [
            ("a", "opened", timedelta(0)),
            ("a", "first_response", timedelta(hours=2 + i)),
            ("a", "resolved", timedelta(days=1)),
            ("b", "opened", timedelta(days=2)),
            ("b", "escalated", timedelta(days=2, hours=3)),
        ]
        for n, (ticket, action, after) in enumerate(steps):
            fields = {
                "event_id": f"{customer}-sp-{n}",
                "customer_id": customer,
                "occurred_at": opened + after,
                "ticket_id": f"{customer}-t-{ticket}",
                "action": action,
                "channel": ("web", "email", "chat", "phone")[(i + n) % 4],
                "priority": ("low", "normal", "high", "urgent")[(i + n) % 4],
                "category": ("inquiry", "complaint", "feedback")[(i + n) % 3],
            }
            events.append(SupportEvent.model_validate(fields))
    last = customers[-1]
    events.append(
        CancellationEvent(
            event_id=f"{last}-cancel",
            customer_id=last,
            occurred_at=T0 + timedelta(days=len(customers) + 3),
            reason="moved abroad",
        )
    )
    return events


def valid_privacy(kind: str, customer: str) -> Message:
    record = {**privacy_record(customer, kind), "event_id": f"{kind}-{customer}"}
    if kind == "erasure":
        record["regulation"] = "ccpa" if customer.startswith("s") else "gdpr"
    return Message(f"valid {kind} {customer}", customer.encode(), as_bytes(record))


def interleaved(valid_ones: Sequence[Message], malformed: Sequence[Message]) -> list[Message]:
    """Half the valid messages, the malformed ones, then the rest: the bad sit among good."""
    half = len(valid_ones) // 2
    return [*valid_ones[:half], *malformed, *valid_ones[half:]]


# --- the run ------------------------------------------------------------------------------------


def produce(settings: Settings, topic: str, messages: Sequence[Message]) -> list[Sent]:
    """Send in order; return where each message landed."""
    assert settings.kafka_bootstrap is not None
    producer = make_producer(settings.kafka_bootstrap)
    try:
        futures = [producer.send(topic, key=m.key, value=m.value) for m in messages]
        producer.flush()
        placed = [future.get(timeout=30) for future in futures]
    finally:
        producer.close()
    return [
        Sent(message, meta.topic, meta.partition, meta.offset)
        for message, meta in zip(messages, placed, strict=True)
    ]


def test_malformed_messages_on_every_other_topic_are_dead_lettered_and_valid_ones_applied(
    settings: Settings, tmp_path: Path
) -> None:
    # A worker that also refuses events dated more than a day ahead of its clock.
    settings = settings.model_copy(update={"max_event_time_skew_hours": 24.0})
    assert settings.kafka_bootstrap is not None and settings.redis_url is not None
    topics = settings.topics
    feedback_customers = [f"f-{i}" for i in range(1, 6)]
    support_customers = [f"s-{i}" for i in range(1, 6)]
    feedback_events = valid_feedback(feedback_customers)
    support_events = valid_support(support_customers)
    ensure_topics(settings, settings.kafka_bootstrap)
    letters = TopicReader(settings.kafka_bootstrap, topics.deadletter)
    sent: list[Sent] = []
    try:
        log_path = tmp_path / "worker.log"
        with running_worker(settings, log_path) as worker:
            # 1. Feedback and support, the bad among the good.
            sent += produce(
                settings,
                topics.feedback,
                interleaved([valid(e) for e in feedback_events], feedback_malformed()),
            )
            sent += produce(
                settings,
                topics.support,
                interleaved([valid(e) for e in support_events], support_malformed()),
            )
            expected = expected_states([*feedback_events, *support_events])
            customers = sorted(expected)
            wait_until(
                lambda: _applied(settings, customers) >= len(feedback_events) + len(support_events),
                WAIT_S,
                "every valid feedback and support event applied",
            )
            stored = stored_states(settings, customers)
            assert {c: comparable(s) for c, s in stored.items()} == {
                c: comparable(s) for c, s in expected.items()
            }

            # 2. Privacy: three erasures and a consent among malformed and wrongly keyed ones.
            valid_privacy_messages = [
                valid_privacy("erasure", "f-1"),
                valid_privacy("erasure", "s-1"),
                valid_privacy("erasure", "f-2"),
                valid_privacy("consent", "f-2"),
            ]
            sent += produce(
                settings, topics.privacy, interleaved(valid_privacy_messages, privacy_malformed())
            )
            wait_until(
                lambda: len(_audit(settings)) >= len(valid_privacy_messages),
                WAIT_S,
                "every valid privacy event applied",
            )

            # 3. After the consent, f-2 is a customer again (a new one: nothing restored).
            comeback = FeedbackEvent(
                event_id="f-2-after-consent",
                customer_id="f-2",
                occurred_at=T0 + timedelta(days=60),
                rating=5,
                scale="csat",
                category="brand",
            )
            sent += produce(settings, topics.feedback, [valid(comeback)])
            wait_until(
                lambda: (
                    (state := _state(settings, "f-2")) is not None and state.events_applied == 1
                ),
                WAIT_S,
                "f-2's event after consent applied",
            )

            # 4. Marketing: touches, offers, opens and clicks among the malformed ones.
            marketing_customers = [f"m-{i}" for i in range(1, 6)]
            marketing_events = valid_marketing(marketing_customers)
            marketing_sent = produce(
                settings,
                topics.marketing,
                interleaved([valid(e) for e in marketing_events], marketing_malformed()),
            )
            sent += marketing_sent
            marketing_expected, campaigns_expected = expected_marketing(settings, marketing_sent)
            try:
                wait_until(
                    lambda: _campaigns(settings) == campaigns_expected,
                    WAIT_S,
                    "every valid marketing event in the campaign figures",
                )
            except AssertionError:  # show how they differ
                figures = _campaigns(settings).by_campaign_arm()
                assert figures == campaigns_expected.by_campaign_arm()
                raise

            malformed = [s for s in sent if s.message.expected is not None]
            letters.wait_for(lambda records: len(records) >= len(malformed), timeout_s=WAIT_S)
            found = dead_letters(letters.drain(2.0))  # anything sent twice would show by now

            # 5. Still up and applying: the process may linger for seconds after its app
            # crashed, so the log must show no crash and a last event must go through.
            crashes = [
                line
                for line in log_path.read_text(errors="replace").splitlines()
                if "Crashed reason=" in line and "CancelledError" not in line
            ]
            assert crashes == []
            probe = comeback.model_copy(update={"event_id": "alive", "customer_id": "alive"})
            sent += produce(settings, topics.feedback, [valid(probe)])
            wait_until(lambda: _state(settings, "alive") is not None, 20.0, "a last event")
            assert worker.poll() is None, "the worker stopped"
    finally:
        letters.close()

    # Every malformed message exactly once, where it was read from, with its reason code.
    by_position = Counter(
        (letter.source_topic, letter.partition, letter.offset) for letter in found
    )
    assert {s.position: by_position[s.position] for s in malformed} == {
        s.position: 1 for s in malformed
    }
    assert sum(by_position.values()) == len(malformed)  # and no valid message among them
    letter_at = {(lt.source_topic, lt.partition, lt.offset): lt for lt in found}
    codes = {(s.topic, s.message.label): letter_at[s.position].reason_code for s in malformed}
    wanted = {(s.topic, s.message.label): s.message.expected for s in malformed}
    assert len(wanted) == len(malformed)  # one label, one kind of bad input
    assert {
        k: (code, wanted[k]) for k, code in codes.items() if not _matches(code, wanted[k])
    } == {}
    for s in malformed:
        letter = letter_at[s.position]
        key = None if s.message.key is None else s.message.key[:MAX_KEY_BYTES].decode()
        assert (letter.key, letter.raw_size) == (key, len(s.message.value)), s.message.label
        if not letter.raw_truncated:
            assert letter.payload() == s.message.value, s.message.label
        assert letter.reason_code != "processing_error", s.message.label  # refused, not failed

    # Every privacy request not applied is loud: a critical alert naming where it sits and
    # why, and no customer id.
    assert settings.kafka_bootstrap is not None
    alerts_reader = TopicReader(settings.kafka_bootstrap, topics.alerts)
    try:
        failed = [
            alert
            for alert in (
                Alert.model_validate_json(r.value) for r in alerts_reader.drain(2.0) if r.value
            )
            if alert.kind == "privacy_request_failed"
        ]
    finally:
        alerts_reader.close()
    privacy_malformed_sent = [s for s in malformed if s.topic == topics.privacy]
    assert sorted(a.alert_id for a in failed) == sorted(
        f"{s.topic}[{s.position[1]}]@{s.position[2]}:privacy_request_failed"
        for s in privacy_malformed_sent
    )
    assert all(a.severity == "critical" and a.customer_id is None for a in failed)
    assert {a.alert_id: a.scores["reason_code"] for a in failed} == {
        f"{s.topic}[{s.position[1]}]@{s.position[2]}:privacy_request_failed": letter_at[
            s.position
        ].reason_code
        for s in privacy_malformed_sent
    }

    # Erasures erased, the consent lifted its block, and no malformed one erased anyone.
    erased = {"f-1", "f-2", "s-1"}
    assert [_state(settings, c) for c in sorted(erased - {"f-2"})] == [None, None]
    kept = [c for c in customers if c not in erased]
    final = stored_states(settings, kept)
    assert {c: comparable(final[c]) for c in kept if c in final} == {
        c: comparable(expected[c]) for c in kept
    }
    audit = _audit(settings)
    assert Counter(audit) == {"erasure": 3, "consent": 1}
    blocked = erased_count(settings)
    assert blocked == 2  # f-1 and s-1; f-2 consented again

    # Every valid marketing event applied (the late one counted), none of the malformed ones.
    marketing_stored = stored_states(settings, marketing_customers)
    assert {c: comparable(s) for c, s in marketing_stored.items()} == {
        c: comparable(s) for c, s in marketing_expected.items()
    }
    assert _campaigns(settings) == campaigns_expected

    per_topic = Counter(s.topic for s in malformed)
    lettered = Counter(letter.source_topic for letter in found)
    for topic, prefix in ((topics.feedback, "f-"), (topics.support, "s-")):
        ours = {c: state for c, state in expected.items() if c.startswith(prefix)}
        lost, doubled = lost_and_doubled(ours, {c: stored[c] for c in ours if c in stored})
        extra = 1 if topic == topics.feedback else 0  # f-2's event after its consent
        valid_in = sum(state.events_applied for state in ours.values()) + extra
        record_fault(
            f"malformed messages on {topic.rsplit('.', 1)[-1]}",
            settings,
            events_in=valid_in + per_topic[topic],
            reflected=valid_in - lost,
            lost=lost,
            duplicated=doubled,
            dead_lettered=lettered[topic],
            note=f"{per_topic[topic]} kinds of bad input among {valid_in} valid events",
        )
    record_fault(
        "malformed messages on privacy",
        settings,
        events_in=len(valid_privacy_messages) + per_topic[topics.privacy],
        reflected=len(audit),
        lost=len(valid_privacy_messages) - len(audit),
        dead_lettered=lettered[topics.privacy],
        note=f"{per_topic[topics.privacy]} kinds of bad input among"
        f" {len(valid_privacy_messages)} erasures and consents; none erased anyone",
    )
    marketing_lost = sum(
        e.event_id not in marketing_stored[e.customer_id].recent_event_ids
        if e.customer_id in marketing_stored
        else 1
        for e in marketing_events
    )
    record_fault(
        "malformed messages on marketing",
        settings,
        events_in=len(marketing_events) + per_topic[topics.marketing],
        reflected=len(marketing_events) - marketing_lost,
        lost=marketing_lost,
        dead_lettered=lettered[topics.marketing],
        note=f"{per_topic[topics.marketing]} kinds of bad input among {len(marketing_events)}"
        " touches, offers, opens and clicks; the campaign figures exact",
    )


def expected_marketing(
    settings: Settings, sent: Sequence[Sent]
) -> tuple[dict[str, CustomerState], Tally]:
    """The marketing customers' states and the campaign figures, from the pure core applied
    to the messages the worker applies, in the order each customer's partition holds them:
    the valid ones and the late one (counted, not applied)."""
    config = settings.scoring
    states: dict[str, CustomerState] = {}
    tallies: list[Tally] = []
    for s in sent:
        if s.message.expected not in (None, "late_event"):
            continue
        event = decode_marketing_event(s.message.value)
        step = apply_marketing(states.get(event.customer_id), event, config)
        states[event.customer_id] = step.state
        tallies.append(step.campaigns)
    return states, summed(tallies)


def _campaigns(settings: Settings) -> Tally:
    """Every partition's campaign figures in Redis, summed."""
    assert settings.redis_url is not None
    client = redis_client(settings, decode_responses=True)
    try:
        parts = [
            Tally.from_fields(
                {
                    name: int(value)
                    for name, value in cast(
                        dict[str, str],
                        client.hgetall(campaigns_key(settings.redis_namespace, partition)),
                    ).items()
                }
            )
            for partition in range(settings.partitions)
        ]
    finally:
        client.close()
    return summed(parts)


def _matches(code: str, expected: str | None) -> bool:
    if expected is not None and expected.endswith("*"):
        return code.startswith(expected[:-1])
    return code == expected


def _state(settings: Settings, customer_id: str) -> CustomerState | None:
    return stored_states(settings, [customer_id]).get(customer_id)


def _applied(settings: Settings, customers: list[str]) -> int:
    return sum(s.events_applied for s in stored_states(settings, customers).values())


def _audit(settings: Settings) -> list[str]:
    """The actions of the privacy audit records, oldest first."""
    assert settings.redis_url is not None
    records = audit_entries(settings)
    return [fields[b"action"].decode() for _, fields in records]
