"""Simulated campaigns with known truth (streamcrm.sim.campaigns), and streamcrm's estimates held
against that truth: attribution recovers what the simulator caused, the A/B intervals cover
the true rates at their stated level, and Thompson sampling run online moves the traffic to
the best arm.

Every simulated event goes through the same pure core as the live path:
``apply_marketing`` for touches, opens and clicks, ``score_event`` for purchases, one state
per customer, the ``campaigns`` tallies of every step summed. streamcrm files a touch under
the segment of the customer's newest score (a model output), so its figures are compared
with the simulator's per arm, summed over segments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from streamcrm.core.campaigns import ABTestRules, campaign_metrics
from streamcrm.core.events import CampaignTouch, PurchaseEvent, TouchClicked, TouchOpened
from streamcrm.core.experiments import ArmPosterior, thompson_choice
from streamcrm.core.marketing import ArmFigures, ArmKey, Tally
from streamcrm.core.scoring import ScoringConfig, apply_marketing, score_event
from streamcrm.core.state import CustomerState, StateRules
from streamcrm.models import ModelBundle
from streamcrm.sim.campaigns import (
    SEGMENT_LABELS,
    ArmTruth,
    CampaignTruth,
    MarketingOrPurchase,
    caused_figures,
    expected_arm_figures,
    iter_campaign,
    segment_of,
    simulate_campaign,
)

START = datetime(2026, 3, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
PERIOD_DAYS = 8
"""The simulator touches each customer every 8 days: the 7-day window and one day."""


def customers(count: int, prefix: str = "cust") -> list[str]:
    return [f"{prefix}-{n:05d}" for n in range(1, count + 1)]


def three_segment_truth() -> CampaignTruth:
    """Three arms that differ in every figure, with rates per simulated segment."""
    return CampaignTruth(
        "spring",
        {
            "A": ArmTruth({"loyal": 0.20, "new": 0.05, "at_risk": 0.10}, 0.4, 0.10, 8),
            "B": ArmTruth(
                {"loyal": 0.30, "new": 0.10, "at_risk": 0.15},
                open_rate=0.25,
                click_rate=0.05,
                cost_cents=25,
                amount_mu=math.log(80.0),
                amount_sigma=0.8,
            ),
            "C": ArmTruth({"loyal": 0.10, "new": 0.02, "at_risk": 0.30}, 0.5, 0.5, 0),
        },
        segments=SEGMENT_LABELS,
    )


class Core:
    """streamcrm's pure core over a stream: one state per customer, the campaign figures
    summed over every step."""

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.models = ModelBundle()
        self.config = config or ScoringConfig()
        self.states: dict[str, CustomerState] = {}
        self.fields: dict[str, int] = {}
        """The summed increments, as the store keeps them."""
        self.watermark: datetime | None = None
        """The newest event time folded (events come in time order)."""

    def step(self, event: MarketingOrPurchase) -> None:
        state = self.states.get(event.customer_id)
        if isinstance(event, PurchaseEvent):
            scored = score_event(state, event, self.models, self.config)
            self.states[event.customer_id], change = scored.state, scored.campaigns
        else:
            stepped = apply_marketing(state, event, self.config)
            self.states[event.customer_id], change = stepped.state, stepped.campaigns
        for name, amount in change.increments():
            self.fields[name] = self.fields.get(name, 0) + amount
        self.watermark = max(self.watermark or event.occurred_at, event.occurred_at)

    @property
    def figures(self) -> Tally:
        return Tally.from_fields(self.fields)

    def fold(self, events: Iterable[MarketingOrPurchase]) -> Core:
        for event in events:
            self.step(event)
        return self

    def by_arm(self, campaign_id: str) -> dict[str, ArmFigures]:
        """streamcrm's figures of the campaign per arm, summed over segments."""
        return {
            arm: figures
            for (campaign, arm), figures in self.figures.by_campaign_arm().items()
            if campaign == campaign_id
        }


# --- the simulator ---------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_events_and_another_seed_other_ones() -> None:
    truth, people = three_segment_truth(), customers(50)

    first = simulate_campaign(truth, people, START, 20, seed=4)

    assert first == simulate_campaign(truth, people, START, 20, seed=4)
    assert first != simulate_campaign(truth, people, START, 20, seed=5)


def test_events_come_in_event_time_order_with_unique_ids() -> None:
    events = simulate_campaign(three_segment_truth(), customers(200), START, 32, seed=1)

    assert all(a.occurred_at <= b.occurred_at for a, b in zip(events, events[1:], strict=False))
    assert len({event.event_id for event in events}) == len(events)
    touch_ids = [event.touch_id for event in events if isinstance(event, CampaignTouch)]
    assert len(set(touch_ids)) == len(touch_ids) == 200 * 4  # one touch per 8 days each


def test_touches_are_sent_before_the_end_of_the_period_and_their_effects_within_a_window() -> None:
    events = simulate_campaign(three_segment_truth(), customers(200), START, 20, seed=2)
    touches = [event for event in events if isinstance(event, CampaignTouch)]

    assert max(touch.occurred_at for touch in touches) < START + timedelta(days=20)
    assert max(event.occurred_at for event in events) < START + timedelta(days=20) + WEEK


def test_a_customer_is_touched_again_only_after_the_window_of_the_last_touch_closed() -> None:
    events = simulate_campaign(three_segment_truth(), customers(300), START, 40, seed=3)
    touched: dict[str, list[datetime]] = {}
    for event in events:
        if isinstance(event, CampaignTouch):
            touched.setdefault(event.customer_id, []).append(event.occurred_at)

    gaps = [b - a for times in touched.values() for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 300 * 4
    assert min(gaps) > WEEK


def test_opens_clicks_and_purchases_fall_strictly_inside_the_window_of_their_touch() -> None:
    events = simulate_campaign(three_segment_truth(), customers(300), START, 30, seed=4)
    touches = {event.touch_id: event for event in events if isinstance(event, CampaignTouch)}
    opened = {event.touch_id for event in events if isinstance(event, TouchOpened)}

    purchases = [event for event in events if isinstance(event, PurchaseEvent)]
    assert purchases
    for purchase in purchases:
        touch = touches[purchase.order_id.removesuffix(":order")]
        assert purchase.customer_id == touch.customer_id
        delay = purchase.occurred_at - touch.occurred_at
        assert timedelta(hours=1) < delay < WEEK - timedelta(hours=1)
    for event in events:
        if isinstance(event, TouchOpened | TouchClicked):
            touch = touches[event.touch_id]
            assert event.customer_id == touch.customer_id
            assert touch.occurred_at < event.occurred_at < touch.occurred_at + WEEK
        if isinstance(event, TouchClicked):
            assert event.touch_id in opened  # a click is also an open


def test_segment_labels_are_a_stable_hash_of_the_customer_id_spread_evenly() -> None:
    people = customers(6000)
    labels = [segment_of(customer_id) for customer_id in people]

    assert labels == [segment_of(customer_id) for customer_id in people]
    for label in SEGMENT_LABELS:
        assert labels.count(label) / len(people) == pytest.approx(1 / 3, abs=0.02)
    assert {segment_of(customer_id, ("",)) for customer_id in people} == {""}


def test_the_realised_figures_match_the_true_expected_figures() -> None:
    truth, people = three_segment_truth(), customers(4000)
    caused = caused_figures(simulate_campaign(truth, people, START, 20, seed=6))
    expected = expected_arm_figures(truth, people)

    for arm, figures in caused.items():
        truly, n = expected[arm], figures.touches
        rate = truly.conversion_rate
        assert figures.conversions / n == pytest.approx(rate, abs=4 * math.sqrt(rate / n))
        assert figures.opens / n == pytest.approx(truly.open_rate, abs=0.03)
        assert figures.clicks / n == pytest.approx(truly.click_rate, abs=0.03)
        assert figures.cost_cents == n * round(100 * truly.cost_per_touch)
        assert figures.revenue_cents / 100 / n == pytest.approx(truly.revenue_per_touch, rel=0.15)
        assert (figures.effect_cents / 100 / n) == pytest.approx(
            truly.effect_per_touch, abs=0.15 * truly.revenue_per_touch
        )


def test_the_default_arm_is_uniform_at_random() -> None:
    events = simulate_campaign(three_segment_truth(), customers(3000), START, 8, seed=7)
    arms = [event.arm for event in events if isinstance(event, CampaignTouch)]

    for arm in "ABC":
        assert arms.count(arm) / len(arms) == pytest.approx(1 / 3, abs=0.03)


def test_a_better_arm_converts_every_touch_a_worse_arm_converts_on_the_same_seed() -> None:
    truth = CampaignTruth.with_rates("s", {"low": 0.05, "high": 0.2})
    people = customers(500)

    def converted(arm: str) -> set[str]:
        events = simulate_campaign(truth, people, START, 20, seed=8, chooser=lambda _: arm)
        return {event.order_id for event in events if isinstance(event, PurchaseEvent)}

    low, high = converted("low"), converted("high")
    assert low < high
    assert len(high) > 2 * len(low)


def test_the_chooser_is_asked_only_once_every_earlier_event_was_yielded() -> None:
    truth = CampaignTruth.with_rates("s", {"A": 0.3, "B": 0.3}, open_rate=0.8)
    yielded: list[MarketingOrPurchase] = []
    asked_after: dict[str, int] = {}

    def chooser(touch_id: str) -> str:
        asked_after[touch_id] = len(yielded)
        return "AB"[len(asked_after) % 2]

    for event in iter_campaign(truth, customers(100), START, 20, seed=9, chooser=chooser):
        yielded.append(event)

    positions = {
        event.touch_id: index
        for index, event in enumerate(yielded)
        if isinstance(event, CampaignTouch)
    }
    assert positions == asked_after  # each touch is the next event after its choice
    arms = [event.arm for event in yielded if isinstance(event, CampaignTouch)]
    assert arms == ["AB"[n % 2] for n in range(1, len(arms) + 1)]


def test_a_chooser_that_names_no_arm_of_the_campaign_is_an_error() -> None:
    truth = CampaignTruth.with_rates("s", {"A": 0.1})

    with pytest.raises(ValueError, match="returned arm 'Z' for touch 's:t0000001'"):
        simulate_campaign(truth, customers(1), START, 8, seed=1, chooser=lambda _: "Z")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CampaignTruth("s", {"A": ArmTruth({"loyal": 0.1})}, SEGMENT_LABELS), "segments"),
        (lambda: ArmTruth({"": 1.5}), r"conversion\[''\] must lie in \[0, 1\]"),
        (lambda: ArmTruth({"": 0.1}, open_rate=0.1, click_rate=0.2), "a click is also an open"),
        (lambda: CampaignTruth.with_rates("s", {}), "at least one arm"),
    ],
)
def test_an_impossible_truth_is_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_repeated_customers_and_naive_starts_are_refused_at_once() -> None:
    truth = CampaignTruth.with_rates("s", {"A": 0.1})

    with pytest.raises(ValueError, match="distinct"):
        iter_campaign(truth, ["c1", "c1"], START, 1, seed=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        iter_campaign(truth, ["c1"], datetime(2026, 3, 1), 1, seed=1)


# --- attribution recovers what the simulator caused ------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_attribution_recovers_exactly_what_the_simulator_caused(seed: int) -> None:
    """Touches, opens, clicks, conversions, revenue and cost in cents, per arm: streamcrm's
    summed deltas equal the simulator's own counts exactly (measured: equal on both seeds,
    600 touches and 86 and 89 purchases, which streamcrm filed under four segments of its
    own: "", "at_risk", "champions" and "loyal")."""
    truth = three_segment_truth()
    events = simulate_campaign(truth, customers(200), START, 3 * PERIOD_DAYS, seed=seed)

    core = Core().fold(events)

    caused = caused_figures(events)
    assert core.by_arm("spring") == caused
    assert sorted(caused) == ["A", "B", "C"]
    assert all(figures.conversions > 10 and figures.clicks > 0 for figures in caused.values())


def test_attributing_with_a_shorter_window_than_the_truths_misses_conversions() -> None:
    """Control: the exact match above is not automatic; a core whose window is shorter than
    the one the simulator's conversions are defined over misses some of them."""
    truth = three_segment_truth()
    events = simulate_campaign(truth, customers(100), START, 17, seed=1)
    short = ScoringConfig(rules=StateRules(attribution_window=timedelta(days=3)))

    core = Core(short).fold(events)

    caused = caused_figures(events)
    for arm, figures in core.by_arm("spring").items():
        assert figures.touches == caused[arm].touches
        assert figures.conversions < caused[arm].conversions


# --- the A/B intervals cover the truth -------------------------------------------------------


CALIBRATION_BATCHES = (range(0, 80), range(80, 160), range(160, 240))
"""Seeds of the simulated campaigns, in three batches of 80 (240 campaigns in all)."""
THROUGH_THE_CORE = frozenset({0, 1})
"""Seeds of the campaigns (one of two arms, one of three) whose counts come from the core;
the others' come from the simulator's own counts, which the core matches exactly (see the
tests above): the core costs about a second per campaign, too much for all 240."""


def calibration_campaign(seed: int) -> tuple[CampaignTruth, list[MarketingOrPurchase]]:
    """Two arms on even seeds and three on odd ones, true rates uniform in 0.02-0.3, 100
    customers per arm touched 3 times each (about 300 touches per arm, uniform arms)."""
    rng = np.random.default_rng(seed)
    arm_count = 2 if seed % 2 == 0 else 3
    rates = {arm: float(rng.uniform(0.02, 0.3)) for arm in "ABC"[:arm_count]}
    truth = CampaignTruth.with_rates(f"cal{seed}", rates)
    people = customers(100 * arm_count, prefix=f"s{seed}")
    return truth, simulate_campaign(truth, people, START, 3 * PERIOD_DAYS, seed=seed)


def test_the_conversion_intervals_of_campaign_reports_cover_the_true_rates_95_percent() -> None:
    """The 95 % interval ``campaign_metrics`` reports for each arm's conversion rate covers the
    arm's true rate in 93-97 % of the arms of 240 simulated campaigns (600 arms, about 300
    touches each, true rates uniform in 0.02-0.3). The campaigns of seeds 0 and 1 are
    counted by the core (and checked equal to the simulator's counts); the others go to
    ``campaign_metrics`` with the simulator's own counts, which the core reproduces exactly.

    Measured coverage per batch of 80 campaigns (200 arms): seeds 0-79 93.5 %, 80-159
    94.5 %, 160-239 95.0 %; all 600 arms 94.33 % (566). As a check of the simulator, not
    asserted here: 3,750 arms of 1,500 further campaigns (seeds 1000-2499) 95.44 %.
    """
    covered: list[list[bool]] = []
    for batch in CALIBRATION_BATCHES:
        hits: list[bool] = []
        for seed in batch:
            truth, events = calibration_campaign(seed)
            counted = caused_figures(events)
            if seed in THROUGH_THE_CORE:
                assert Core().fold(events).by_arm(truth.campaign_id) == counted
            tally = Tally({ArmKey(truth.campaign_id, arm): f for arm, f in counted.items()})
            (report,) = campaign_metrics(tally, START, ABTestRules())
            assert len(report.arms) == len(truth.arms)
            for arm in report.arms:
                low, high = arm.conversion_interval
                hits.append(low <= truth.conversion(arm.arm, "") <= high)
        covered.append(hits)

    coverage = [sum(hits) / len(hits) for hits in covered]
    overall = sum(map(sum, covered)) / sum(map(len, covered))
    assert sum(map(len, covered)) == 600
    assert 0.93 <= overall <= 0.97, (overall, coverage)


# --- Thompson sampling, online ---------------------------------------------------------------


THOMPSON_RATES = {"A": 0.05, "B": 0.07, "C": 0.10}
WARM_UP = 500
"""Touches each arm gets (in turn) before Thompson sampling takes over."""
REFRESH = timedelta(hours=1)
"""How often (in event time) the chooser reads the figures again, as the live metrics timer."""


class OnlineThompson:
    """A chooser that gives each arm ``WARM_UP`` touches in turn, then picks by Thompson
    sampling (seeded by the touch id) over the posteriors of streamcrm's figures so far, read
    again every ``REFRESH`` of event time at the newest event time as the watermark, with
    touches whose window is still open counted as ``rules`` say."""

    def __init__(self, campaign_id: str, arms: Sequence[str], rules: ABTestRules) -> None:
        self.campaign_id = campaign_id
        self.arms = list(arms)
        self.rules = rules
        self.core = Core()
        self.chosen: list[str] = []
        self.posteriors: dict[str, ArmPosterior] = {}
        self.read_at: datetime | None = None

    def __call__(self, touch_id: str) -> str:
        if len(self.chosen) < WARM_UP * len(self.arms):
            arm = self.arms[len(self.chosen) % len(self.arms)]
        else:
            now = self.core.watermark
            assert now is not None
            if self.read_at is None or now - self.read_at >= REFRESH:
                self.posteriors = self.read(now)
                self.read_at = now
            arm = thompson_choice(self.posteriors, touch_id)
        self.chosen.append(arm)
        return arm

    def read(self, watermark: datetime) -> dict[str, ArmPosterior]:
        """The campaign's posteriors at ``watermark``, per arm summed over segments."""
        arms: dict[str, ArmPosterior] = {}
        for key, posterior in self.rules.posteriors(self.core.figures, watermark).items():
            if key.campaign_id == self.campaign_id:
                known = arms.get(key.arm)
                arms[key.arm] = (
                    posterior
                    if known is None
                    else known.updated(posterior.successes, posterior.trials)
                )
        return arms


def online_thompson(
    rates: dict[str, float], seed: int, rules: ABTestRules, days: int = 8 * PERIOD_DAYS
) -> list[str]:
    """The arms chosen for the touches of 1,500 customers touched every 8 days."""
    truth = CampaignTruth.with_rates("ts", rates)
    chooser = OnlineThompson(truth.campaign_id, sorted(rates), rules)
    for event in iter_campaign(truth, customers(1500), START, days, seed, chooser):
        chooser.core.step(event)
    return chooser.chosen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_thompson_sampling_online_gives_the_best_arm_most_later_touches_from_the_start(
    seed: int,
) -> None:
    """1,500 customers, each touched every 8 days for 64 days (12,000 touches flowing evenly
    over time): the first 1,500 give each arm its 500 touches in turn, the next 10,500 are
    chosen by Thompson sampling from the posteriors of the figures streamcrm has attributed
    so far (every event folded through the core as it happens, read every hour of event
    time). A touch whose attribution window is still open counts for the share of its
    conversions already due (streamcrm.core.delayed), not as a failure.

    Measured share of the best arm (0.10), first 1,500 later touches / all 10,500, seeds
    1, 2, 3: counted this way 77.6 / 96.2 %, 74.0 / 95.8 %, 96.5 / 99.4 %; with every touch
    counted as a trial at once (as before) 58.1 / 90.0 %, 54.1 / 88.9 %, 80.7 / 95.2 %
    (docs/marketing.md has seeds 4-5, the close pair 0.10 / 0.12 and 0.20 / 0.25).
    """
    chosen = online_thompson(THOMPSON_RATES, seed, ABTestRules())

    warm_up, later = chosen[: 3 * WARM_UP], chosen[3 * WARM_UP :]
    assert all(warm_up.count(arm) == WARM_UP for arm in "ABC")
    assert len(later) == 10_500
    share = later.count("C") / len(later)
    assert share >= 0.95, share
    assert later[:1500].count("C") / 1500 >= 0.7


def test_counting_open_touches_as_failures_is_slower_to_find_the_best_arm() -> None:
    """Control, on the same seed: the figures as received (a touch not converted yet counts
    as a failure) give the best arm fewer of the first touches after the warm-up."""
    chosen = online_thompson(THOMPSON_RATES, 1, ABTestRules(counting="received"), days=32)

    later = chosen[3 * WARM_UP :]
    assert later[:1500].count("C") / 1500 < 0.65
