"""The Faust pass-through baseline of ``streamcrm bench``: decode → emit, no state, no models.

Run as ``python -m streamcrm.bench.passthrough BOOTSTRAP PREFIX``. One agent per input topic
(``concurrency=1``, as streamcrm's own agents) parses each message as JSON and sends it on to
``<prefix>.passthrough``; a timer publishes how many messages it has passed so far to
``<prefix>.bench-progress`` every second, as ``{"published_at": wall time, "count": n}``.
Its rate is the framework's own ceiling on this machine: what a worker costs before any
scoring, Redis or model work.
"""

from __future__ import annotations

import json
import sys
import time
from tempfile import mkdtemp

import faust

from streamcrm.worker.app import faust_worker

INPUT_KINDS = ("purchases", "feedback", "support")


def create_passthrough_app(bootstrap: str, prefix: str) -> faust.App:
    """The baseline app, with the local-broker timeouts streamcrm uses against Tansu."""
    app = faust.App(
        f"{prefix}-passthrough",
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        store="memory://",
        datadir=mkdtemp(prefix="passthrough-"),
        web_enabled=False,
        broker_rebalance_timeout=4.0,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
    )
    output = app.topic(f"{prefix}.passthrough", key_serializer="raw", value_serializer="raw")
    progress = app.topic(f"{prefix}.bench-progress", key_serializer="raw", value_serializer="raw")
    passed = [0]

    for kind in INPUT_KINDS:
        source = app.topic(f"{prefix}.{kind}", key_serializer="raw", value_serializer="raw")

        async def pass_on(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                message = event.message
                decoded = json.loads(message.value)
                await output.send(key=message.key, value=json.dumps(decoded).encode())
                passed[0] += 1

        app.agent(source, name=f"pass-{kind}", concurrency=1)(pass_on)

    async def report_progress() -> None:
        report = {"published_at": time.time(), "count": passed[0]}
        await progress.send(key=b"passthrough", value=json.dumps(report).encode())

    app.timer(1.0, name="report-progress")(report_progress)
    return app


def main(argv: list[str]) -> int:
    bootstrap, prefix = argv
    app = create_passthrough_app(bootstrap, prefix)
    # At WARNING, as a production worker may run, and without Faust's spinner, which would set
    # the root logger to DEBUG and make the baseline pay for every debug call.
    worker = faust_worker(app, "WARNING")
    try:
        worker.execute_from_commandline()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
