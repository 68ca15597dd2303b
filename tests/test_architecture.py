"""The layout's rules, checked on the source: no import cycles between modules or between packages,
``core`` a leaf, composition beside ``main.py``, the engine's parts stand alone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "api",
    "call",
    "core",
    "events",
    "knowledge",
    "providers",
    "scenarios",
    "shapes",
    "simulator",
    "speech",
    "storage",
    "telephony",
    "tools",
)
# the root modules: the spine (main, voice_pipeline, models, schemas, utils, config) and the composition root
SPINE = tuple(sorted(path.stem for path in ROOT.glob("*.py")))


def project_modules() -> dict[str, Path]:
    modules = {name: ROOT / f"{name}.py" for name in SPINE}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``path`` imports: top level, inside functions and under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            # the longest project module the name starts with
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    # a package's __init__ importing its own modules is not a cycle worth reporting
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def package_graph() -> dict[str, set[str]]:
    """The import graph with each package, and each root module, as one node."""
    graph: dict[str, set[str]] = {}
    for module, deps in import_graph().items():
        node = module.partition(".")[0]
        graph.setdefault(node, set()).update(d.partition(".")[0] for d in deps)
    return {node: deps - {node} for node, deps in graph.items()}


def test_package_graph_has_every_package_and_root_module() -> None:
    graph = package_graph()
    assert set(PACKAGES) | set(SPINE) <= set(graph)
    assert "core" in graph["call"]  # a known edge: the engine counts barge-ins in core.metrics


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_packages_import_downward_only() -> None:
    """No cycle between packages either (bench and tests aside: they may import anything)."""
    assert cycles(package_graph()) == []


def test_core_is_a_leaf() -> None:
    """``core`` holds leaf utilities: it imports no project package but config and utils."""
    assert package_graph()["core"] <= {"config", "utils"}


def test_composition_happens_beside_main() -> None:
    """The process's services are built once, at the root; no package imports the composition root."""
    importers = {node for node, deps in package_graph().items() if "app_runtime" in deps}
    assert importers == {"main"}


def _is_the_runtime(expr: ast.expr) -> bool:
    """``runtime`` or ``….runtime`` (``request.app.state.runtime``)."""
    return (isinstance(expr, ast.Name) and expr.id == "runtime") or (
        isinstance(expr, ast.Attribute) and expr.attr == "runtime"
    )


def test_routers_do_not_bolt_attributes_onto_the_runtime() -> None:
    """The routes read the services; what they need is declared where the services are composed."""
    offenders = []
    for path in (ROOT / "api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            owners: list[ast.expr] = []  # the objects whose attribute the statement sets
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                owners = [t.value for t in targets if isinstance(t, ast.Attribute)]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("setattr", "delattr"):
                owners = node.args[:1]
            if any(_is_the_runtime(owner) for owner in owners):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_schemas_re_exports_every_shape() -> None:
    """Each resource's shapes live in ``shapes/<resource>.py``; ``from schemas import X`` reaches them all."""
    tree = ast.parse((ROOT / "schemas.py").read_text())
    starred = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.names[0].name == "*"}
    modules = {f"shapes.{p.stem}" for p in (ROOT / "shapes").glob("*.py") if p.stem != "__init__"}
    assert starred == modules
    for path in (ROOT / "shapes").glob("[!_]*.py"):
        body = ast.parse(path.read_text()).body
        defined = {n.name for n in body if isinstance(n, ast.ClassDef | ast.FunctionDef)} | {
            t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }
        exported = next(
            ast.literal_eval(n.value)
            for n in body
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__"
        )
        public = {name for name in defined if not name.startswith("_")} - {"__all__"}
        assert public <= set(exported), f"{path.name}: add {sorted(public - set(exported))} to __all__"


MAX_FILE_LINES = 700


def test_no_python_file_is_longer_than_700_lines() -> None:
    """Past that a file holds more than one thing: split it by topic (tests too, helpers beside them)."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in ROOT.rglob("*.py")
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
        and (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_engine_parts_do_not_import_the_orchestrator() -> None:
    graph = import_graph()
    offenders = {m: deps for m, deps in graph.items() if m.startswith("call.") and "voice_pipeline" in deps}
    assert offenders == {}
    # …nor do vendors reach into the engine
    assert {
        m
        for m, deps in graph.items()
        if m.startswith("providers.") and any(d.startswith("call.") for d in deps)
    } == set()


def test_only_the_transport_knows_the_wire_format() -> None:
    """Media Streams message names are spelt in the transport alone (the simulator and tests aside)."""
    spelled = {
        name
        for name, path in project_modules().items()
        if '"event"' in path.read_text() and name != "call.transport" and not name.startswith("simulator")
    }
    assert spelled == set()


def test_orchestrator_is_short() -> None:
    source = (ROOT / "voice_pipeline.py").read_text()
    tree = ast.parse(source)
    ws_conn = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "WSConn")
    # wiring and the caller-turn routing; who answered, interruptions, the end and the watchdog's loop
    # are parts of their own (call.answering, call.interruptions, call.ending, call.silence)
    assert ws_conn.end_lineno - ws_conn.lineno + 1 <= 350


def test_the_dialer_is_split_by_job() -> None:
    """Claiming, pacing, settling and status polling are parts of their own; the Dialer runs the loop."""
    tree = ast.parse((ROOT / "telephony" / "dialer.py").read_text())
    dialer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Dialer")
    assert dialer.end_lineno - dialer.lineno + 1 <= 160
    graph = import_graph()
    assert {"telephony.dial_claims", "telephony.dial_pacing", "telephony.dial_settling"} <= graph[
        "telephony.dialer"
    ]
    assert "telephony.status_polling" in graph["telephony.dialer"]
