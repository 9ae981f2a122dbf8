"""The dependency rule and the size of things (docs/architecture.md), checked on every run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "persistence", "workers")
MODULE_LINES = 300
FUNCTION_LINES = 40
#: Modules allowed past the limit, each with the reason (empty: none is).
LONG_MODULES: dict[str, str] = {
    # One event's path reads in few files (docs/architecture.md): each of these is one step of
    # it, whole, rather than four modules that import each other.
    "domain/model.py": "its values, the transition table, the aggregate, its domain events",
    "domain/ports.py": "what crosses the domain's boundary: commands in, records and storage",
    "persistence/uow.py": "one transaction: its port, what it records at commit, the SQL side",
    "persistence/db.py": "the connection an event uses and the statements it sends, together",
    "persistence/models.py": "each table beside the mapping of its rows to domain objects",
    "persistence/repositories.py": "every SQL repository, on the same tables and statements",
    "workers/edge/task.py": "all of Celery's side of an event: consumer, request, task, gate",
    "workers/broker/transport.py": "every change to kombu's Redis transport: screening to acks",
    "workers/handlers.py": "every handler with the dependencies and result they share",
    "workers/outbox.py": "a follow-on from its envelope to its publishing, in one place",
    "workers/edge/accept.py": "the envelope's schemas with the field rules they alone use",
    "workers/runtime/root.py": "every state a process keeps (its counting too), in its runtime",
}
#: Functions allowed past the limit, each with the reason.
LONG_FUNCTIONS: dict[str, str] = {}


def _sources() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def test_the_import_contracts_hold() -> None:
    # Contracts in pyproject.toml: layers, a standard-library-only domain, handlers free of
    # Celery, SQL and the wire, and a production worker that never imports the stand-ins.
    # In its own process: import-linter reconfigures logging for the process it runs in.
    lint = str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run(
        [lint, "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_of_ours_imports_itself_back_through_others() -> None:
    # Every import counts, the ones inside functions too: an import circle makes what loads
    # first depend on who imports whom (the composition root once imported the Celery app,
    # whose wiring imports the root).
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    circles = sorted(
        " -> ".join((importer, *chain))
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if (chain := graph.find_shortest_chain(importer=imported, imported=importer))
    )
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_module_is_longer_than_the_limit_without_a_stated_reason() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in _sources()
        if (n := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert set(long) <= set(LONG_MODULES), f"over {MODULE_LINES} lines: {long}"


def test_no_function_is_longer_than_the_limit_without_a_stated_reason() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.name}"] = lines
    assert set(long) <= set(LONG_FUNCTIONS), f"over {FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("package", ["domain"])
def test_the_domain_reads_neither_the_clock_nor_the_environment(package: str) -> None:
    for path in (REPO / package).rglob("*.py"):
        text = path.read_text()
        for call in ("datetime.now(", "os.environ", "uuid.uuid4(", "time.time("):
            assert call not in text, f"{path.relative_to(REPO)} calls {call}"


#: How many of our modules (packages included) an event task may load (the aim was 30).
TASK_MODULES = 26


def test_the_event_task_reaches_no_more_project_modules_than_its_ratchet() -> None:
    # In its own process: what importing the task module loads, and nothing a test loaded.
    count = (
        "import sys, workers.edge.task; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", count], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = ast.literal_eval(done.stdout.strip())
    assert len(loaded) <= TASK_MODULES, f"{len(loaded)} modules: {loaded}"
