"""Marketing effect from events (streamcrm.core.marketing): last-touch attribution in event
time, and per-arm figures whose running sums are exact in any arrival order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streamcrm.core.marketing import (
    WEEK,
    ArmFigures,
    ArmKey,
    MarketingMemory,
    Purchase,
    Tally,
    Touch,
    attribution,
    delay_bin,
    forget_before,
    record_click,
    record_open,
    record_purchase,
    record_touch,
    summed,
    tally,
    touch_bucket,
)

DAY = timedelta(days=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)

Step = Callable[[MarketingMemory], tuple[MarketingMemory, Tally]]


def touch(touch_id: str, day: float, arm: str = "A", cost: int = 20) -> Touch:
    return Touch(touch_id, "spring", arm, T0 + day * DAY, cost)


def purchase(purchase_id: str, day: float, cents: int = 5_000) -> Purchase:
    return Purchase(purchase_id, T0 + day * DAY, cents)


def run(steps: list[Step]) -> tuple[MarketingMemory, Tally]:
    memory, total = MarketingMemory(), Tally()
    for step in steps:
        memory, delta = step(memory)
        total = total + delta
    return memory, total


def test_a_purchase_goes_to_the_latest_touch_before_it_within_the_window() -> None:
    memory, _ = run(
        [
            lambda m: record_touch(m, touch("t1", 0), WEEK),
            lambda m: record_touch(m, touch("t2", 3), WEEK),
            lambda m: record_touch(m, touch("t3", 9), WEEK),
            lambda m: record_purchase(m, purchase("o1", 5), WEEK),  # t2 (t3 is after it)
            lambda m: record_purchase(m, purchase("o2", 11), WEEK),  # t3
            lambda m: record_purchase(m, purchase("o3", 30), WEEK),  # none: 21 days after t3
        ]
    )

    assert attribution(memory, WEEK) == {"o1": "t2", "o2": "t3"}


def test_a_touch_that_arrives_after_the_purchase_it_wins_moves_the_conversion() -> None:
    """The purchases and marketing topics are consumed independently."""
    memory, first = run(
        [
            lambda m: record_touch(m, touch("t1", 0, arm="A"), WEEK),
            lambda m: record_purchase(m, purchase("o1", 4), WEEK),
        ]
    )
    _, moved = record_touch(memory, touch("t2", 2, arm="B"), WEEK)

    assert moved.arms[ArmKey("spring", "A")] == ArmFigures(conversions=-1, revenue_cents=-5_000)
    assert moved.arms[ArmKey("spring", "B")] == ArmFigures(
        touches=1, conversions=1, revenue_cents=5_000, cost_cents=20
    )
    assert (first + moved).arms[ArmKey("spring", "A")] == ArmFigures(touches=1, cost_cents=20)


def test_a_touch_converts_once_however_many_purchases_it_wins() -> None:
    _, total = run(
        [
            lambda m: record_touch(m, touch("t1", 0), WEEK),
            lambda m: record_purchase(m, purchase("o1", 1, 1_000), WEEK),
            lambda m: record_purchase(m, purchase("o2", 2, 3_000), WEEK),
        ]
    )

    figures = total.arms[ArmKey("spring", "A")]
    assert (figures.touches, figures.conversions, figures.revenue_cents) == (1, 1, 4_000)
    assert figures.effect_cents == 3_980
    assert figures.roi == 3_980 / 20
    assert figures.effect_per_touch_cents == 3_980
    assert figures.conversion_rate == 1.0


def test_repeated_events_change_nothing() -> None:
    memory, total = run(
        [
            lambda m: record_touch(m, touch("t1", 0), WEEK),
            lambda m: record_open(m, "t1", T0 + DAY, WEEK),
            lambda m: record_purchase(m, purchase("o1", 1), WEEK),
        ]
    )
    again, delta_total = run(
        [
            lambda m: record_touch(memory, touch("t1", 0), WEEK),
            lambda m: record_open(m, "t1", T0 + 2 * DAY, WEEK),
            lambda m: record_purchase(m, purchase("o1", 1), WEEK),
        ]
    )

    assert delta_total.is_zero
    assert tally(again, WEEK) == tally(memory, WEEK) == total


def test_opens_and_clicks_count_touches_once_and_a_click_is_an_open() -> None:
    _, total = run(
        [
            lambda m: record_click(m, "t1", T0 + DAY, WEEK),  # before its touch arrives
            lambda m: record_touch(m, touch("t1", 0), WEEK),
            lambda m: record_open(m, "t1", T0 + DAY, WEEK),
            lambda m: record_touch(m, touch("t2", 0.5), WEEK),
            lambda m: record_open(m, "t2", T0 + DAY, WEEK),
        ]
    )

    figures = total.arms[ArmKey("spring", "A")]
    assert (figures.touches, figures.opens, figures.clicks) == (2, 2, 1)


def test_campaign_figures_sum_over_segments_and_partitions() -> None:
    east = Tally({ArmKey("c", "A", "loyal"): ArmFigures(touches=2, cost_cents=10)})
    west = Tally({ArmKey("c", "A", "at risk"): ArmFigures(touches=1, conversions=1)})

    assert summed([east, west]).by_campaign_arm() == {
        ("c", "A"): ArmFigures(touches=3, conversions=1, cost_cents=10)
    }


def test_each_arm_keeps_its_touches_and_conversions_by_touch_time_and_its_delays() -> None:
    """Beside the totals: the touches and conversions of the touches sent in each bucket of
    an eighth of the window, and the delay bin (a sixteenth of the window) from each
    converted touch to its first purchase; a touch that wins a purchase later moves them
    too (what streamcrm.core.delayed reads to count touches whose window is still open)."""
    key = ArmKey("spring", "A")
    first, late = touch("t1", 0), touch("t2", 2.5)
    _, before = run(
        [
            lambda m: record_touch(m, first, WEEK),
            lambda m: record_purchase(m, purchase("o1", 3), WEEK),
            lambda m: record_purchase(m, purchase("o2", 4), WEEK),
        ]
    )
    early, later = touch_bucket(first.at, WEEK), touch_bucket(late.at, WEEK)
    assert early != later
    assert dict(before.timing) == {
        (key, f"touches@{early}"): 1,
        (key, f"conversions@{early}"): 1,
        (key, f"delay@{delay_bin(3 * DAY, WEEK)}"): 1,  # the first purchase's delay
    }
    assert delay_bin(3 * DAY, WEEK) == 6

    _, total = run(
        [
            lambda m: record_touch(m, first, WEEK),
            lambda m: record_purchase(m, purchase("o1", 3), WEEK),
            lambda m: record_purchase(m, purchase("o2", 4), WEEK),
            lambda m: record_touch(m, late, WEEK),
        ]
    )
    assert dict(total.timing) == {
        (key, f"touches@{early}"): 1,
        (key, f"touches@{later}"): 1,
        (key, f"conversions@{later}"): 1,
        (key, f"delay@{delay_bin(DAY / 2, WEEK)}"): 1,
    }
    assert ("spring|A||touches@" + str(later), 1) in total.increments()
    assert Tally.from_fields(dict(total.increments())) == total


# --- any order, with forgetting -----------------------------------------------------------------

touch_ids = st.sampled_from([f"t{n}" for n in range(6)])
days = st.integers(min_value=0, max_value=40)
event = st.one_of(
    st.tuples(st.just("touch"), touch_ids, days, st.sampled_from(["A", "B"])),
    st.tuples(st.just("open"), touch_ids, days, st.just("")),
    st.tuples(st.just("click"), touch_ids, days, st.just("")),
    st.tuples(st.just("purchase"), st.sampled_from([f"o{n}" for n in range(8)]), days, st.just("")),
)


def unique(events: list[tuple[str, str, int, str]]) -> list[tuple[str, str, int, str]]:
    """One touch per touch id and one purchase per purchase id (an id names one event)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for kind, ident, day, arm in events:
        if kind in ("touch", "purchase") and (kind, ident) in seen:
            continue
        seen.add((kind, ident))
        out.append((kind, ident, day, arm))
    return out


def step(kind: str, ident: str, day: int, arm: str) -> Step:
    at = T0 + day * DAY
    if kind == "touch":
        return lambda m: record_touch(m, Touch(ident, "c", arm, at, 30), WEEK)
    if kind == "open":
        return lambda m: record_open(m, ident, at, WEEK)
    if kind == "click":
        return lambda m: record_click(m, ident, at, WEEK)
    return lambda m: record_purchase(m, Purchase(ident, at, 1_000 + day), WEEK)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=25).map(unique), st.randoms(use_true_random=False))
def test_the_sum_of_the_deltas_is_the_figures_of_every_event_in_any_order(
    events: list[tuple[str, str, int, str]], rng: object
) -> None:
    shuffled = list(events)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]

    in_time_order, by_time = run([step(*e) for e in events])
    _, any_order = run([step(*e) for e in shuffled])

    assert any_order == by_time == tally(in_time_order, WEEK)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=25).map(unique), st.integers(min_value=0, max_value=10))
def test_forgetting_what_is_settled_changes_no_sum(
    events: list[tuple[str, str, int, str]], lateness_days: int
) -> None:
    """Events arrive in time order give or take ``lateness_days``; after each, the memory
    forgets what came before the newest time less the lateness (what no event to come can
    change). The running sums equal those of a memory that forgets nothing."""
    ordered = sorted(events, key=lambda e: e[2])
    arrival = sorted(ordered, key=lambda e: e[2] + (hash(e[1]) % (lateness_days + 1)))
    newest: datetime | None = None
    forgetting, forgetting_total = MarketingMemory(), Tally()
    keeping, keeping_total = MarketingMemory(), Tally()
    for kind, ident, day, arm in arrival:
        at = T0 + day * DAY
        if newest is not None and at < newest - lateness_days * DAY:
            continue  # late: refused by the caller (and by both memories alike)
        newest = max(newest or at, at)
        forgetting, delta = step(kind, ident, day, arm)(forgetting)
        forgetting_total = forgetting_total + delta
        keeping, delta = step(kind, ident, day, arm)(keeping)
        keeping_total = keeping_total + delta
        forgetting = forget_before(forgetting, newest - lateness_days * DAY, WEEK)

    assert forgetting_total == keeping_total == tally(keeping, WEEK)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["purchase", "open", "click"]), st.floats(0, 30)),
        min_size=1,
        max_size=8,
    )
)
def test_without_a_touch_a_step_changes_no_figure_just_as_tallying_says(
    steps: list[tuple[str, float]],
) -> None:
    """Steps on a memory with no touch skip tallying (nothing to count): the delta is the
    tally of the memory after less the tally before, exactly, and zero."""
    memory = MarketingMemory()
    for number, (kind, day) in enumerate(steps):
        at = T0 + day * DAY
        if kind == "purchase":
            after, delta = record_purchase(memory, Purchase(f"o{number}", at, 1_000), WEEK)
        elif kind == "open":
            after, delta = record_open(memory, f"t{number % 3}", at, WEEK)
        else:
            after, delta = record_click(memory, f"t{number % 3}", at, WEEK)
        plain = tally(after, WEEK) - tally(memory, WEEK)
        assert (delta, repr(delta)) == (plain, repr(plain))
        assert delta.is_zero
        memory = after
