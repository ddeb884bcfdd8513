"""The ``streamcrm`` command: worker | learner | demo | simulate | replay | score | population
| evaluate | status | deadletter | bench | schemas | topics.

Every command reads :class:`~streamcrm.settings.Settings` once from ``STREAMCRM_*``
variables; a broker or Redis left unconfigured is started embedded where that makes sense.
A service that cannot be reached (Redis, or a Kafka broker a command talks to) is one line on
standard error, ``streamcrm: ... unavailable ...``, and exit code 2. A worker checks Kafka and
Redis before it starts: a refused certificate or password is the same one line and exit code
2 at once, a service that does not answer after ``STREAMCRM_STARTUP_WAIT_S``.
``streamcrm --version`` prints the installed version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from streamcrm.core.records import Alert, CampaignMetrics, UpliftMetrics
from streamcrm.errors import ConfigurationError, StoreUnavailableError, StreamcrmError
from streamcrm.services.connections import (
    check_connections,
    check_kafka,
    kafka_client_options,
    redis_state_store,
)
from streamcrm.services.embedded import embedded_settings
from streamcrm.settings import Settings

if TYPE_CHECKING:  # imported where used: most commands never touch Redis
    from streamcrm.store import RedisStateStore


def _version() -> str:
    """The installed package's version (``pyproject.toml``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamcrm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    from kafka.errors import KafkaError

    try:
        result: int = args.run(settings, args)
        return result
    except StreamcrmError as error:
        print(f"streamcrm: {error}", file=sys.stderr)
        return 2
    except KafkaError as error:  # a command that talks to Kafka could not reach it
        where = settings.kafka_bootstrap or "the embedded broker"
        print(f"streamcrm: Kafka unavailable at {where}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


Commands = argparse._SubParsersAction  # what add_subparsers returns (no public name)


def _parser() -> argparse.ArgumentParser:
    """The ``streamcrm`` command line: one sub-command per ``_add_*`` below."""
    parser = argparse.ArgumentParser(prog="streamcrm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamcrm {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_worker,
        _add_learner,
        _add_demo,
        _add_simulate,
        _add_replay,
        _add_schemas,
        _add_score,
        _add_population,
        _add_evaluate,
        _add_status,
        _add_deadletter,
        _add_bench,
        _add_topics,
    ):
        add(commands)
    return parser


def _add_worker(commands: Commands) -> None:
    worker = commands.add_parser("worker", help="run a scoring worker (Faust)")
    worker.set_defaults(run=run_worker)


def _add_learner(commands: Commands) -> None:
    learner = commands.add_parser(
        "learner",
        help="run the shared learner in its own process (workers with STREAMCRM_LEARNER=process)",
        description="Learn every scoring worker's model updates from the model-updates topic"
        " and checkpoint the models to Redis every STREAMCRM_MODEL_CHECKPOINT_INTERVAL_S, with"
        " the offset read next in the same atomic step: a restart loses no update the"
        " checkpoint acknowledged and learns none twice. Run one per worker group"
        " (docs/learner.md).",
    )
    learner.set_defaults(run=run_learner)


def _add_demo(commands: Commands) -> None:
    demo = commands.add_parser(
        "demo", help="embedded broker + Redis + worker + simulated live events, scores shown"
    )
    demo.add_argument("--customers", type=int, default=300)
    demo.add_argument("--days", type=int, default=365)
    demo.add_argument(
        "--days-per-second",
        type=float,
        default=8.0,
        help="simulated days of events sent per wall-clock second",
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--refresh-s", type=float, default=3.0)
    demo.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once the simulation has played (by default, in a terminal, the worker and "
        "its dashboard keep serving until Enter is pressed)",
    )
    demo.set_defaults(run=run_demo)


def _add_simulate(commands: Commands) -> None:
    simulate = commands.add_parser("simulate", help="produce (or write) a simulated event stream")
    simulate.add_argument("--customers", type=int, default=1000)
    simulate.add_argument("--days", type=int, default=180)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--out",
        type=Path,
        help="write the events here instead of producing: JSON lines (.jsonl) or CSV (.csv),"
        " gzip-compressed if the name ends .gz",
    )
    simulate.add_argument("--truth", type=Path, help="write the ground truth (JSON) here")
    simulate.set_defaults(run=run_simulate)


def _add_replay(commands: Commands) -> None:
    replay = commands.add_parser(
        "replay",
        help="publish a history file's events through the input topics in event-time order",
        description="Validate every line of FILE (.jsonl/.ndjson/.json: JSON lines; .csv: a"
        " header row, then one event a row; .gz: gzip-compressed) and publish the valid events,"
        " sorted by event time, to their topics. Exit status: 0 when every line was published,"
        " 1 when some lines were rejected (the others are still published) or failed to"
        " publish, 2 for usage or configuration errors.",
    )
    replay.add_argument("file", type=Path, metavar="FILE", help="the history to replay")
    replay.add_argument(
        "--dry-run", action="store_true", help="validate and summarise without publishing"
    )
    replay.add_argument(
        "--rejects", type=Path, metavar="FILE", help="write every rejected line here as JSON lines"
    )
    replay.set_defaults(run=run_replay)


def _add_schemas(commands: Commands) -> None:
    schemas = commands.add_parser("schemas", help="write the topics' JSON Schema files")
    schemas.add_argument("--dir", type=Path, default=Path("schemas"))
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(run=run_schemas)


def _add_score(commands: Commands) -> None:
    score = commands.add_parser("score", help="print a customer's state and scores from Redis")
    score.add_argument("customer_id")
    score.set_defaults(run=run_score)


def _add_population(commands: Commands) -> None:
    population = commands.add_parser(
        "population", help="aggregates over every customer's latest score, from Redis"
    )
    population.add_argument("--json", action="store_true", help="print JSON instead of text")
    population.set_defaults(run=run_population)


def _add_evaluate(commands: Commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="replay a purchase history to a cut-off, forecast, and compare with BG/NBD and"
        " Pareto/NBD",
        description="Replay FILE's events before the cut-off through the scoring core (the"
        " online churn model learning from delayed labels, the repeat-buying models refitted"
        " weekly), forecast every customer at the cut-off (probability of any purchase, expected"
        " purchases, CLV over the holdout), fit BG/NBD, Pareto/NBD and Gamma-Gamma with"
        " lifetimes on the same split, and print the three models' figures against what happened"
        " in the holdout. FILE is a"
        " CDNOW file (.txt; CDNOW_sample.txt or CDNOW_master.txt alone reads lifetimes' copy) or"
        " a streamcrm history (.jsonl/.csv, optionally .gz).",
    )
    evaluate.add_argument("file", type=Path, metavar="FILE")
    evaluate.add_argument(
        "--cutoff",
        type=date.fromisoformat,
        help="calibration cut-off date (default: first event day + calibration weeks)",
    )
    evaluate.add_argument("--calibration-weeks", type=float, default=39.0)
    evaluate.add_argument("--holdout-weeks", type=float, default=39.0)
    evaluate.add_argument(
        "--predictions", type=Path, metavar="CSV", help="write per-customer predictions here"
    )
    evaluate.set_defaults(run=run_evaluate)


def _add_status(commands: Commands) -> None:
    status = commands.add_parser(
        "status",
        help="rates, lag, model quality, segments, campaigns, uplift and the latest alerts,"
        " read from Kafka",
        description="Read every worker's newest report from the model-metrics topic (rates,"
        " lag per partition, records out, latency, model quality, segment shares, outcomes),"
        " each campaign's newest report (arms, conversion rates, effect, ROI, P(best), expected"
        " loss, stopping decision) and the newest uplift of acting on alerts (per alert kind"
        " and segment) from their compacted topics, and the tail of the alerts topic, and"
        " print them once (or every --watch seconds).",
    )
    status.add_argument(
        "--alerts", type=int, default=10, metavar="N", help="show the N latest alerts (10)"
    )
    status.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C"
    )
    status.set_defaults(run=run_status)


def _add_deadletter(commands: Commands) -> None:
    deadletter = commands.add_parser(
        "deadletter",
        help="dead letters by reason; list or re-publish chosen ones to their source topic",
        description="Read the dead-letter topic to its current end and print the letters"
        " counted by reason code. Filters choose letters; --list prints them one per line;"
        " --republish sends their payloads back to their source topics with their original"
        " keys (after the producer or streamcrm was fixed). Payloads cut at 16 KiB are never"
        " re-published.",
    )
    deadletter.add_argument("--reason", metavar="CODE", help="only letters with this reason code")
    deadletter.add_argument("--topic", metavar="TOPIC", help="only letters from this topic")
    deadletter.add_argument(
        "--at",
        metavar="TOPIC:PARTITION:OFFSET",
        action="append",
        default=[],
        help="only this message (repeatable)",
    )
    deadletter.add_argument("--list", action="store_true", help="print the chosen letters")
    deadletter.add_argument(
        "--republish", action="store_true", help="send the chosen letters' payloads back"
    )
    deadletter.set_defaults(run=run_deadletter)


def _add_bench(commands: Commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure the whole pipeline against its ceiling and a Faust pass-through",
        description="Start (or use the configured) broker and Redis, simulate a mixed stream,"
        " and measure in one run: one worker's sustained events/s, a Faust pass-through"
        " agent's on the same stream, the ceiling from per-event component costs, latency at"
        " half the pipeline's rate, worker RSS and Redis memory per customer. Prints a table"
        " and writes JSON.",
    )
    bench.add_argument("--customers", type=int, default=100_000)
    bench.add_argument("--days", type=int, default=14, help="simulated days of activity")
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--json", type=Path, default=Path("bench.json"), metavar="FILE")
    bench.add_argument(
        "--no-passthrough", action="store_true", help="skip the Faust pass-through baseline"
    )
    bench.add_argument(
        "--scaling-workers",
        type=int,
        default=2,
        metavar="N",
        help="also run the stream through N workers of one group (0: skip)",
    )
    bench.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        metavar="M",
        help="also run one worker at half the pipeline's rate for M minutes and report whether"
        " its memory stays flat (0: skip)",
    )
    bench.add_argument(
        "--soak-rate",
        type=float,
        metavar="EVENTS_PER_S",
        help="offer this rate in the soak instead of half the pipeline's",
    )
    bench.add_argument(
        "--soak-event-time",
        choices=["wall", "simulated"],
        default="wall",
        help="the soak's event time moves at the wall clock's pace, as a live feed's does"
        " (default), or as simulated: 14 days a period, thousands of times faster, a catch-up"
        " in which quiet customers fall due for re-scores again and again",
    )
    bench.add_argument(
        "--learner-only",
        action="store_true",
        help="measure only the shared learner: the model updates a worker queues per event,"
        " the updates per second one `streamcrm learner` absorbs (in process, and from Kafka to"
        " Redis checkpoints) and so how many workers at 5,000 events/s it serves",
    )
    bench.add_argument(
        "--learner",
        choices=("process", "in-worker"),
        default="process",
        help="where the shared learner runs in the bench: its own `streamcrm learner` process"
        " beside the workers, which then only score (default), or in the worker",
    )
    bench.add_argument(
        "--latency-only",
        action="store_true",
        help="only one worker through the stream (pick a small one with --customers) and its"
        " latency after it, in steady state and catching up",
    )
    bench.add_argument(
        "--latency-rate",
        type=float,
        metavar="EVENTS_PER_S",
        help="offer this rate in the latency measurements instead of half the pipeline's",
    )
    bench.add_argument(
        "--no-rescoring-comparison",
        action="store_true",
        help="skip the second pipeline run with re-scoring of quiet customers off",
    )
    bench.set_defaults(run=run_bench)


def _add_topics(commands: Commands) -> None:
    topics = commands.add_parser("topics", help="create the topics on the configured broker")
    topics.set_defaults(run=run_topics)


def announce_service(line: str) -> None:
    """Say where an embedded service listens, before anything else (standard error, so that
    standard output stays the command's own): a producer can be pointed at it."""
    print(line, file=sys.stderr, flush=True)


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run one Faust worker until it is stopped (embedded services if none configured).

    Before Faust starts, :func:`~streamcrm.services.connections.check_connections` connects to Kafka
    and Redis as the worker will: a refusal (certificate, client certificate, password) ends
    the command at once, a service that does not answer after ``STREAMCRM_STARTUP_WAIT_S``;
    either way with one line on standard error and exit code 2.
    """
    with embedded_settings(settings, announce_service) as settings:
        check_connections(settings)

        from streamcrm.services.kafka import ensure_topics
        from streamcrm.worker.app import create_app, faust_worker

        assert settings.kafka_bootstrap is not None, "embedded_settings sets the broker"
        ensure_topics(settings, settings.kafka_bootstrap)
        app = create_app(settings)
        worker = faust_worker(app, settings.log_level)
        try:
            worker.execute_from_commandline()
        except SystemExit as stop:
            return int(stop.code or 0)
    return 0


def run_learner(settings: Settings, args: argparse.Namespace) -> int:
    """Run the shared learner until SIGTERM or SIGINT (embedded services if none configured,
    as for ``streamcrm worker``), after the same start-up check of Kafka and Redis."""
    with embedded_settings(settings, announce_service) as settings:
        check_connections(settings)

        from streamcrm.learner.process import run_learner as learn_until_stopped
        from streamcrm.services.kafka import ensure_topics

        assert settings.kafka_bootstrap is not None, "embedded_settings sets the broker"
        ensure_topics(settings, settings.kafka_bootstrap)
        asyncio.run(learn_until_stopped(settings))
    return 0


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """The main job on embedded defaults, with scores printed as they flow and the live
    dashboard served by the worker (on ``STREAMCRM_WEB_PORT``, else a free port)."""
    from streamcrm.cli.demo import run_live_demo
    from streamcrm.services.embedded import free_port

    with embedded_settings(settings, announce_service) as local:
        if local.web_port is None:
            local = local.model_copy(update={"web_port": free_port()})
        return run_live_demo(
            local,
            customers=args.customers,
            days=args.days,
            days_per_second=args.days_per_second,
            seed=args.seed,
            refresh_s=args.refresh_s,
            keep_serving=not args.exit_when_done and sys.stdin.isatty() and sys.stdout.isatty(),
        )


def run_simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Produce a seeded simulated history to the input topics, or write it to a file."""
    from streamcrm.cli.replay import write_history
    from streamcrm.services.kafka import ensure_topics, make_producer, produce_events
    from streamcrm.sim.simulator import simulate

    simulation = simulate(customers=args.customers, days=args.days, seed=args.seed)
    if args.truth:
        truth = {cid: _truth_record(t) for cid, t in simulation.truth.items()}
        args.truth.write_text(json.dumps(truth, indent=1, sort_keys=True))
    if args.out:
        try:
            written = write_history(args.out, simulation.events)
        except (OSError, ValueError) as error:
            print(f"streamcrm: --out: {error}", file=sys.stderr)
            return 2
        print(f"wrote {written} events to {args.out}")
        return 0
    if settings.kafka_bootstrap is None:
        raise ConfigurationError("set STREAMCRM_KAFKA_BOOTSTRAP (or use --out FILE)")
    check_kafka(settings)  # a refused TLS or SASL login named at once, as for the worker
    ensure_topics(settings, settings.kafka_bootstrap)
    producer = make_producer(settings.kafka_bootstrap, kafka_client_options(settings))
    started = time.perf_counter()
    sent = produce_events(producer, settings, simulation.events)
    producer.flush()
    producer.close()
    elapsed = time.perf_counter() - started
    print(f"produced {sent} events in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s)")
    return 0


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Publish a history file's valid events to the input topics in event-time order."""
    from streamcrm.cli.progress import ProgressBar
    from streamcrm.cli.replay import (
        format_report,
        plan_replay,
        read_history,
        replay_history,
        write_rejections,
    )
    from streamcrm.services.kafka import ensure_topics, make_producer

    bootstrap = settings.kafka_bootstrap
    if bootstrap is None and not args.dry_run:
        raise ConfigurationError("set STREAMCRM_KAFKA_BOOTSTRAP (or use --dry-run)")
    # Publishing flat out keeps kafka-python's I/O thread waiting for the GIL, and it warns
    # of a "slow task" every few hundred milliseconds; across a progress bar that is noise.
    logging.getLogger("kafka.net.selector").addFilter(
        lambda record: "blocking the event loop" not in record.getMessage()
    )
    try:
        history = read_history(args.file)
        if args.rejects:
            write_rejections(args.rejects, history.rejections)
    except (OSError, ValueError) as error:
        print(f"streamcrm: replay {args.file}: {error}", file=sys.stderr)
        return 2
    if args.dry_run or bootstrap is None:
        summary = plan_replay(history.events, settings)
    else:
        check_kafka(settings)  # a refused TLS or SASL login named at once, as for the worker
        ensure_topics(settings, bootstrap)
        producer = make_producer(bootstrap, kafka_client_options(settings))
        try:
            with ProgressBar("publishing", sys.stderr) as progress:
                summary = replay_history(history.events, settings, producer, progress)
        finally:
            producer.close()
    print(
        format_report(args.file, history, summary, dry_run=args.dry_run, rejects_path=args.rejects)
    )
    return 1 if history.rejections or summary.failed else 0


def _truth_record(truth: object) -> dict[str, object]:
    from dataclasses import asdict

    record = asdict(truth)  # type: ignore[call-overload]
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}


def run_schemas(settings: Settings, args: argparse.Namespace) -> int:
    """Write (or, with --check, verify) the JSON Schema files."""
    from streamcrm.cli.schemas import stale_schemas, write_schemas

    if args.check:
        stale = stale_schemas(args.dir)
        for name in stale:
            print(f"stale or missing: {args.dir / name} (run: streamcrm schemas)")
        return 1 if stale else 0
    for path in write_schemas(args.dir):
        print(path)
    return 0


def run_score(settings: Settings, args: argparse.Namespace) -> int:
    """Print one customer's state and latest score from Redis as JSON."""

    if settings.redis_url is None:
        raise ConfigurationError("set STREAMCRM_REDIS_URL to the Redis the workers use")

    # With pseudonymised ids the store knows the customer by their pseudonym.
    stored_id = settings.pseudonymise(args.customer_id) if settings.pseudonymise else None
    customer_id = stored_id or args.customer_id

    async def fetch() -> tuple[object, object]:
        store = _redis_store(settings)
        try:
            return await store.load(customer_id), await store.load_score(customer_id)
        finally:
            await store.close()

    state, score = asyncio.run(fetch())
    if state is None:
        print(f"no state for customer {args.customer_id!r}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "state": state.model_dump(mode="json"),  # type: ignore[attr-defined]
                "score": score.model_dump(mode="json") if score else None,  # type: ignore[attr-defined]
            },
            indent=2,
        )
    )
    return 0


def run_population(settings: Settings, args: argparse.Namespace) -> int:
    """Print population aggregates (segment shares, RFM codes, score distributions)."""
    from dataclasses import asdict

    from streamcrm.core.aggregates import format_summary, summarise
    from streamcrm.core.records import CustomerScore

    if settings.redis_url is None:
        raise ConfigurationError("set STREAMCRM_REDIS_URL to the Redis the workers use")

    async def collect() -> list[CustomerScore]:
        store = _redis_store(settings)
        try:
            return [score async for score in store.iter_scores()]
        finally:
            await store.close()

    summary = summarise(asyncio.run(collect()))
    print(json.dumps(asdict(summary), indent=2) if args.json else format_summary(summary))
    return 0


def run_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from streamcrm.cli.evaluation import (
        default_cutoff,
        evaluate,
        format_report,
        read_evaluation_history,
        write_predictions,
    )

    try:
        events = read_evaluation_history(args.file)
    except (OSError, ValueError) as error:
        print(f"streamcrm evaluate: {error}", file=sys.stderr)
        return 2
    if args.cutoff is not None:
        cutoff = datetime.combine(args.cutoff, datetime.min.time(), UTC)
    else:
        cutoff = default_cutoff(events, timedelta(weeks=args.calibration_weeks))
    report = evaluate(events, cutoff, timedelta(weeks=args.holdout_weeks))
    print(format_report(report))
    if args.predictions is not None:
        rows = write_predictions(args.predictions, report)
        print(f"{rows} customers' predictions written to {args.predictions}")
    return 0


def run_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the workers' reports, campaigns, uplift and the latest alerts (see
    :mod:`streamcrm.cli.status`)."""
    from rich.console import Console

    from streamcrm.cli.status import latest_alerts, latest_on_topic, latest_reports, status_view

    if settings.kafka_bootstrap is None:
        print("streamcrm status: set STREAMCRM_KAFKA_BOOTSTRAP to the broker", file=sys.stderr)
        return 2
    # One attempt, as the worker's start-up check: a refused TLS or SASL login is named at
    # once, instead of the clients' "Unable to bootstrap" after their 30 s.
    check_kafka(settings)
    console = Console()
    options = kafka_client_options(settings)
    while True:
        try:
            reports = latest_reports(
                settings.kafka_bootstrap, settings.topics.model_metrics, client_options=options
            )
            alerts = latest_alerts(
                settings.kafka_bootstrap,
                settings.topics.alerts,
                args.alerts,
                client_options=options,
            )
            # Topics made before issue 18 may lack these two: nothing published yet.
            campaigns = latest_on_topic(
                settings.kafka_bootstrap,
                settings.topics.campaign_metrics,
                CampaignMetrics,
                client_options=options,
                missing_ok=True,
            )
            uplift = latest_on_topic(
                settings.kafka_bootstrap,
                settings.topics.uplift,
                UpliftMetrics,
                client_options=options,
                missing_ok=True,
            )
        except (LookupError, TimeoutError) as error:
            print(f"streamcrm status: {error} (has a worker ever run?)", file=sys.stderr)
            return 2
        alerts = _alerts_of_customers_not_erased(settings, alerts)
        if args.watch:
            console.clear()
        console.print(*status_view(reports, alerts, campaigns, uplift))
        if not args.watch:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _redis_store(settings: Settings) -> RedisStateStore:
    """The workers' Redis store, as the commands that read it open it."""
    return redis_state_store(settings)


def _alerts_of_customers_not_erased(settings: Settings, alerts: list[Alert]) -> list[Alert]:
    """The alerts ``streamcrm status`` may show: none of a customer erased since (checked
    against the workers' block list in Redis). Without Redis to ask, customer alerts are left
    out, with a line saying so: an erased customer must not be shown."""
    from streamcrm.cli.status import without_erased

    if all(alert.customer_id is None for alert in alerts):
        return alerts

    async def check() -> list[Alert]:
        store = _redis_store(settings)
        try:
            return await without_erased(alerts, store)
        finally:
            await store.close()

    try:
        if settings.redis_url is None:
            raise StoreUnavailableError("STREAMCRM_REDIS_URL is not set")
        return asyncio.run(check())
    except StoreUnavailableError as error:
        print(
            f"streamcrm status: customer alerts not shown: cannot check erasures ({error})",
            file=sys.stderr,
        )
        return [alert for alert in alerts if alert.customer_id is None]


def run_deadletter(settings: Settings, args: argparse.Namespace) -> int:
    """Summarise, list or re-publish dead letters (see :mod:`streamcrm.cli.deadletters`)."""
    from streamcrm.cli.deadletters import (
        LetterFilter,
        format_letters,
        format_summary,
        parse_letters,
        parse_position,
        republish,
        summarise,
    )
    from streamcrm.services.kafka import make_producer, read_to_end

    if settings.kafka_bootstrap is None:
        raise ConfigurationError("set STREAMCRM_KAFKA_BOOTSTRAP to the broker")
    try:
        chosen = LetterFilter(
            reason_code=args.reason,
            source_topic=args.topic,
            positions=frozenset(parse_position(text) for text in args.at),
        )
    except ValueError:
        raise ConfigurationError("--at takes TOPIC:PARTITION:OFFSET") from None
    check_kafka(settings)  # a refused TLS or SASL login named at once, as for the worker
    try:
        records = read_to_end(
            settings.kafka_bootstrap,
            settings.topics.deadletter,
            client_options=kafka_client_options(settings),
        )
    except (LookupError, TimeoutError) as error:
        raise ConfigurationError(f"cannot read {settings.topics.deadletter}: {error}") from None
    readable, unreadable = parse_letters(record.value for record in records)
    letters = [letter for letter in readable if chosen.matches(letter)]
    if unreadable:
        print(
            f"{unreadable} record{'s' if unreadable > 1 else ''} on {settings.topics.deadletter}"
            " are not dead letters: skipped",
            file=sys.stderr,
        )
    print(format_summary(summarise(letters), len(letters)))
    if args.list and letters:
        print(format_letters(letters))
    if args.republish:
        producer = make_producer(settings.kafka_bootstrap, kafka_client_options(settings))
        try:
            report = republish(
                letters, lambda topic, key, value: producer.send(topic, key=key, value=value)
            )
            producer.flush()
        finally:
            producer.close()
        print(
            f"re-published {report.sent} ({report.now_valid} pass validation now);"
            f" {report.truncated} cut payloads not sent"
        )
    return 0


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    """``streamcrm bench`` (see :mod:`streamcrm.bench.pipeline`)."""
    from streamcrm.bench.pipeline import format_report, run_bench, write_json

    logging.getLogger().setLevel(logging.WARNING)
    if args.learner_only:
        return _run_learner_bench(settings, args)
    settings = settings.model_copy(update={"learner": args.learner})
    with embedded_settings(settings, announce_service) as settings:
        report = run_bench(
            settings,
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            log_dir=settings.data_dir,
            passthrough=not args.no_passthrough,
            scaling_workers=args.scaling_workers,
            soak_minutes=args.soak_minutes,
            soak_rate=args.soak_rate,
            soak_event_time=args.soak_event_time,
            rescoring_comparison=not args.no_rescoring_comparison,
            latency_only=args.latency_only,
            latency_rate=args.latency_rate,
        )
    print(format_report(report))
    write_json(args.json, report)
    print(f"\nfigures written to {args.json}")
    return 0


def _run_learner_bench(settings: Settings, args: argparse.Namespace) -> int:
    """``streamcrm bench --learner-only`` (see :mod:`streamcrm.bench.learner`)."""
    from dataclasses import asdict

    from streamcrm.bench.learner import format_learner_report, run_learner_bench

    with embedded_settings(settings, announce_service) as settings:
        figures = run_learner_bench(settings, args.customers, args.days, args.seed)
    print(format_learner_report(figures))
    figures_json = asdict(figures) | {
        "updates_per_event": figures.updates_per_event,
        "workers_served": figures.workers_served,
        "workers_served_live": figures.workers_served_live,
    }
    args.json.write_text(json.dumps(figures_json, indent=2) + "\n")
    print(f"\nfigures written to {args.json}")
    return 0


def run_topics(settings: Settings, args: argparse.Namespace) -> int:
    """Create the streamcrm topics on the configured broker."""
    from streamcrm.services.kafka import ensure_topics

    if settings.kafka_bootstrap is None:
        raise ConfigurationError("set STREAMCRM_KAFKA_BOOTSTRAP")
    check_kafka(settings)  # a refused TLS or SASL login named at once, as for the worker
    for name in ensure_topics(settings, settings.kafka_bootstrap):
        print(f"created {name}")
    return 0


__all__ = ["main"]
