"""The progress bar: throttled in-place redraws on a terminal, periodic lines elsewhere."""

from __future__ import annotations

import io

from streamcrm.cli.progress import ProgressBar


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_it_redraws_in_place_at_most_ten_times_a_second() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressBar("publishing", out, is_tty=True, clock=clock)

    for done in range(1, 1001):
        clock.now += 0.001  # a thousand updates in one second
        bar(done, 1000)
    bar.close()

    frames = out.getvalue().split("\r")[1:]
    assert 9 <= len(frames) <= 11
    assert "[" in frames[0] and "]" in frames[0]
    assert frames[-1].startswith("publishing [") and "1,000/1,000 (100%)" in frames[-1]
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_elsewhere_it_prints_a_line_every_few_seconds_and_the_last_one() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressBar("publishing", out, is_tty=False, line_every_s=5.0, clock=clock)

    for done in range(1, 61):
        clock.now += 0.25  # fifteen seconds in all
        bar(done, 60)
    bar.close()

    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "publishing: 20/60 (33%) 4/s ETA 10s",
        "publishing: 40/60 (67%) 4/s ETA 5s",
        "publishing: 60/60 (100%) 4/s in 15s",
    ]


def test_work_done_in_a_blink_shows_only_the_end_and_nothing_of_zero_total() -> None:
    out, clock = io.StringIO(), FakeClock()

    with ProgressBar("publishing", out, is_tty=False, clock=clock) as bar:
        bar(10, 20)
        bar(20, 20)
    with ProgressBar("empty", out, is_tty=False, clock=clock) as bar:
        bar(0, 0)

    assert out.getvalue().splitlines() == [
        "publishing: 20/20 (100%)",
        "empty: 0/0 (100%)",
    ]
