"""The ``streamcrm`` command's own options."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from streamcrm.cli import main


def test_version_prints_the_installed_version_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamcrm {version('streamcrm')}"
