"""Starting processes with their output in a log file."""

from __future__ import annotations

import sys
from pathlib import Path

from streamcrm.services.processes import start_process

SPEAKS_ON_BOTH = "import sys; print('out'); print('err', file=sys.stderr)"


def test_a_started_process_writes_its_output_and_errors_to_the_log(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "child.log"

    process = start_process([sys.executable, "-c", SPEAKS_ON_BOTH], log_path)

    assert process.wait(timeout=60) == 0
    assert log_path.read_text().split() == ["out", "err"]


def test_a_started_process_gets_the_environment_it_is_given(tmp_path: Path) -> None:
    log_path = tmp_path / "child.log"
    reads_env = "import os; print(os.environ.get('STREAMCRM_PROBE'))"

    process = start_process([sys.executable, "-c", reads_env], log_path, {"STREAMCRM_PROBE": "7"})

    assert process.wait(timeout=60) == 0
    assert log_path.read_text().strip() == "7"
