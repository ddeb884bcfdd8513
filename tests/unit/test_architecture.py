"""The architecture holds: an I/O-free scoring core, and published schemas that match the code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import streamcrm
from streamcrm.schemas import stale_schemas, write_schemas

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(streamcrm.__file__).resolve().parent
CORE_MODULES = (
    "streamcrm.errors",
    "streamcrm.events",
    "streamcrm.state",
    "streamcrm.features",
    "streamcrm.scores",
    "streamcrm.scoring",
    "streamcrm.models",
    "streamcrm.models.churn",
    "streamcrm.models.segments",
    "streamcrm.simulator",
)
IO_PACKAGES = frozenset({"faust", "redis", "kafka", "aiokafka"})


def source_of(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package_init = PACKAGE / relative / "__init__.py"
    return package_init if package_init.exists() else PACKAGE / relative.with_suffix(".py")


def imported_top_level_names(path: Path) -> set[str]:
    """Top-level package names of every absolute import statement in ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_io_package(module: str) -> None:
    path = source_of(module)

    assert path.exists(), path
    assert imported_top_level_names(path) & IO_PACKAGES == set()


def packages_loaded_by(modules: tuple[str, ...]) -> set[str]:
    """Top-level packages in ``sys.modules`` after importing ``modules`` in a fresh interpreter."""
    probe = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_the_whole_core_loads_no_io_package_even_indirectly() -> None:
    assert packages_loaded_by(CORE_MODULES) & IO_PACKAGES == set()


def test_the_import_probe_does_see_io_packages() -> None:
    # The control for the test above: the store adapter is allowed redis, and the probe sees it.
    assert "redis" in packages_loaded_by(("streamcrm.store",))


def test_checked_in_schemas_match_the_models() -> None:
    # The same check as `streamcrm schemas --check`; run `streamcrm schemas` to regenerate.
    assert stale_schemas(REPO / "schemas") == []


def test_stale_schemas_reports_missing_and_edited_files(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    (tmp_path / "crm.feedback.schema.json").write_text("{}\n")
    (tmp_path / "crm.scores.schema.json").unlink()

    assert sorted(stale_schemas(tmp_path)) == ["crm.feedback.schema.json", "crm.scores.schema.json"]
