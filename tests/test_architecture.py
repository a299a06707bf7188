"""The import rules of ARCHITECTURE.md, checked on the real import graph (grimp reads every
import statement, function-level and TYPE_CHECKING ones included)."""

from __future__ import annotations

import graphlib
import sys
from itertools import permutations

import grimp
import pytest

KINDS = ("app.generation", "app.judging", "app.synth")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("app", "trainer", include_external_packages=True)


def _imports(graph: grimp.ImportGraph, module: str) -> set[str]:
    return graph.find_modules_directly_imported_by(module)


@pytest.mark.parametrize("package", ["app", "trainer"])
def test_no_import_cycles(graph, package):
    modules = {m for m in graph.modules if m == package or m.startswith(package + ".")}
    sorter = graphlib.TopologicalSorter({m: _imports(graph, m) & modules for m in modules})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_app_uses_only_trainer_formats(graph):
    bad = sorted(
        f"{m} -> {t}"
        for m in graph.find_descendants("app") | {"app"}
        for t in _imports(graph, m)
        if (t == "trainer" or t.startswith("trainer.")) and t != "trainer.formats"
    )
    assert not bad, f"app may import only trainer.formats from trainer: {bad}"


@pytest.mark.parametrize(("package", "forbidden"), [("app", "torch"), ("trainer", "fastapi"), ("trainer", "sqlalchemy")])
def test_heavy_dependencies_stay_on_their_side(graph, package, forbidden):
    bad = sorted(m for m in graph.find_descendants(package) | {package} if forbidden in _imports(graph, m))
    assert not bad, f"{package} must not import {forbidden}: {bad}"


def test_formats_contract_needs_only_the_standard_library(graph):
    """Both sides load trainer/formats.py: it must import nothing but the standard library."""
    roots = {t.split(".")[0] for t in _imports(graph, "trainer.formats")}
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots - set(sys.stdlib_module_names)


@pytest.mark.parametrize(("a", "b"), list(permutations(KINDS, 2)))
def test_run_kinds_never_import_each_other(graph, a, b):
    chain = graph.find_shortest_chain(importer=a, imported=b, as_packages=True)
    assert chain is None, f"{a} reaches {b}: {' -> '.join(chain)}"


@pytest.mark.parametrize("kind", KINDS)
def test_run_engine_knows_no_kind(graph, kind):
    chain = graph.find_shortest_chain(importer="app.runs", imported=kind, as_packages=True)
    assert chain is None, f"the run engine reaches a kind: {' -> '.join(chain)}"
