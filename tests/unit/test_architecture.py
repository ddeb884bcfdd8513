"""The architecture holds: an I/O-free scoring core, and published schemas that match the code."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import streamcrm
from streamcrm.cli.schemas import stale_schemas, write_schemas

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(streamcrm.__file__).resolve().parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("streamcrm.errors", "streamcrm.addresses"),
    ("streamcrm.models",),
    ("streamcrm.core",),
    ("streamcrm.sim", "streamcrm.settings"),
    ("streamcrm.store",),
    ("streamcrm.services",),
    ("streamcrm.worker",),
    ("streamcrm.learner",),
    ("streamcrm.cli", "streamcrm.bench"),
    ("streamcrm.__main__", "streamcrm"),
)
"""The layers, bottom first: a module may import its own layer and the ones below, never one
above. The command line and the benchmarks are both applications on top (``streamcrm
bench`` runs the benchmarks; the demo shows the churn oracle's AUC from ``bench.churn``)."""
PURE = ("streamcrm.errors", "streamcrm.addresses", "streamcrm.models", "streamcrm.core",
        "streamcrm.sim")  # fmt: skip
"""The layers that must not touch Kafka, Redis or Faust, even indirectly."""
IO_PACKAGES = frozenset({"faust", "redis", "kafka", "aiokafka"})


def all_modules(package: Path = PACKAGE, name: str = "streamcrm") -> dict[str, Path]:
    """Every module of the package, found by walking the tree (not listed by hand)."""
    modules: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((name, *parts))] = path
    return modules


MODULES = all_modules()


def layer_of(module: str) -> int:
    """The layer of ``module``: that of the longest layer name it falls under."""
    best, rank = -1, -1
    for index, names in enumerate(LAYERS):
        for layer in names:
            if (module == layer or module.startswith(layer + ".")) and len(layer) > best:
                best, rank = len(layer), index
    assert rank >= 0, f"{module} is in no layer: add its package to LAYERS"
    return rank


def streamcrm_imports(path: Path, modules: Mapping[str, Path], name: str) -> set[str]:
    """The modules of the package that ``path`` imports, at any level: module level, inside
    functions, under ``TYPE_CHECKING``. ``from a import b`` names ``a.b`` when that is a
    module, else ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t == name or t.startswith(name + "."))
    return found


def import_graph(modules: Mapping[str, Path], name: str = "streamcrm") -> dict[str, set[str]]:
    return {module: streamcrm_imports(path, modules, name) - {module} for module, path in
            modules.items()}  # fmt: skip


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one
    module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle_at_any_level() -> None:
    assert cycles(import_graph(MODULES)) == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    graph = import_graph(MODULES)
    upward = {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }
    assert upward == set()


def test_a_planted_cycle_and_an_upward_import_are_caught(tmp_path: Path) -> None:
    """The control for the two tests above: a copy of the package with ``core.state``
    importing the worker (upward) and the worker importing the state back (a cycle)."""
    copy = tmp_path / "streamcrm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    state = copy / "core" / "state.py"
    state.write_text(
        state.read_text() + "\nfrom streamcrm.worker.pipeline import ScoringPipeline\n"
    )
    modules = all_modules(copy)
    graph = import_graph(modules)

    assert ["streamcrm.core.state", "streamcrm.worker.pipeline"] in [
        [m for m in cycle if m in ("streamcrm.core.state", "streamcrm.worker.pipeline")]
        for cycle in cycles(graph)
    ]
    assert any(
        layer_of(target) > layer_of("streamcrm.core.state")
        for target in graph["streamcrm.core.state"]
    )


PURE_MODULES = sorted(m for m in MODULES if any(m == p or m.startswith(p + ".") for p in PURE))


def test_the_pure_layers_are_found_by_the_walk() -> None:
    assert {"streamcrm.core.scoring", "streamcrm.models.churn", "streamcrm.sim.simulator"} <= set(
        PURE_MODULES
    )


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_package(module: str) -> None:
    assert imported_top_level_names(MODULES[module]) & IO_PACKAGES == set()


def imported_top_level_names(path: Path) -> set[str]:
    """Top-level package names of every absolute import statement in ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


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
    assert packages_loaded_by(tuple(PURE_MODULES)) & IO_PACKAGES == set()


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
