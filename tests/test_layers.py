"""The house rules of docs/design.md, checked on the source: who may import what, and where SQL lives."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP)\s", re.IGNORECASE)


def _imports(path: Path) -> set[str]:
    """Top-level package of every import in the file, lazy imports inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(*parts: str) -> list[Path]:
    return sorted(path for part in parts for path in (ROOT / part).rglob("*.py"))


def _violations(files: list[Path], forbidden: set[str]) -> dict[str, set[str]]:
    found = {str(f.relative_to(ROOT)): _imports(f) & forbidden for f in files}
    return {name: bad for name, bad in found.items() if bad}


def test_the_engine_never_imports_the_store_or_the_ui():
    assert _violations(_files("moe_core"), {"streamlit", "duckdb", "store", "polyroute"}) == {}


def test_the_store_never_imports_models_or_the_ui():
    assert _violations(_files("store"), {"torch", "transformers", "vllm", "streamlit", "polyroute"}) == {}
    # The store may read the engine's records, use its pure numpy analyses (the writer and the
    # upgrade keep the routing summaries with them) and raise its errors (standard library only, so
    # that bad input names its parameters the one way), never anything that loads a model.
    engine_uses = {f: _imports(f) for f in _files("store") if "moe_core" in _imports(f)}
    allowed = re.compile(r"from moe_core(\.records|\.errors|\.analysis(\.\w+)?) import")
    for file in engine_uses:
        text = file.read_text(encoding="utf-8")
        found = re.findall(r"from moe_core[.\w]* import", text)
        assert found and all(allowed.fullmatch(line) for line in found), (file, found)
    assert _violations(_files("moe_core/analysis"), {"torch", "transformers", "vllm"}) == {}
    for file in _files("moe_core/analysis"):  # nor reach a model through the rest of the engine
        found = re.findall(r"from (moe_core[.\w]*) import", file.read_text(encoding="utf-8"))
        assert all(module.startswith(("moe_core.analysis", "moe_core.errors")) for module in found), (file, found)


def test_vllm_is_imported_only_in_its_backend():
    outside = [f for f in _files("moe_core", "store", "polyroute", "pages") if "backends/vllm" not in f.as_posix()]
    assert _violations([*outside, ROOT / "app.py"], {"vllm"}) == {}


def test_pages_hold_no_sql_and_touch_no_tensors():
    pages = [ROOT / "app.py", *_files("pages")]
    # The pages' helpers in polyroute/ui draw and cache; they too reach the store only through `store`.
    assert _violations([*pages, *_files("polyroute/ui")], {"torch", "transformers", "vllm", "duckdb"}) == {}
    for page in pages:
        strings = [
            n.value
            for n in ast.walk(ast.parse(page.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        assert not [s for s in strings if SQL.search(s)], page


def _modules(path: Path) -> set[str]:
    """Every module the file imports (`a.b.c` for `from a.b import c`: it may be a module), lazy ones included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_the_ui_never_imports_the_command_line():
    """The app and the CLI share jobs (polyroute.workflows), background jobs and analyses, never each other."""
    ui = [ROOT / "app.py", *_files("pages"), *_files("polyroute/ui"), *_files("polyroute/background")]
    cli = re.compile(r"polyroute\.cli(\.|$)|polyroute\.\w+_cli$")
    found = {str(f.relative_to(ROOT)): sorted(m for m in _modules(f) if cli.match(m)) for f in ui}
    assert {name: bad for name, bad in found.items() if bad} == {}
    # Nor do the layers below the CLI: whole jobs, analyses and run data know no flags.
    below = [*_files("polyroute/workflows"), *_files("polyroute/analyses"), ROOT / "polyroute/run_data.py"]
    found = {str(f.relative_to(ROOT)): sorted(m for m in _modules(f) if cli.match(m)) for f in below}
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_importing_the_store_loads_no_model_library():
    code = (
        "import sys, store, store.writer, store.queries, store.sandbox; "
        "print(sorted(m for m in ('torch', 'transformers', 'streamlit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_the_analyses_are_pure_numpy_and_scipy():
    # networkx builds the expert-sharing graph (the analyses issue asks for it); nothing else.
    allowed = {"numpy", "scipy", "networkx", "moe_core", "__future__", *sys.stdlib_module_names}
    found = {str(f.relative_to(ROOT)): _imports(f) - allowed for f in _files("moe_core/analysis")}
    assert {name: extra for name, extra in found.items() if extra} == {}
    analysis_files = _files("moe_core/analysis")
    engine = [n for f in analysis_files for n in re.findall(r"from (moe_core\.\w+)", f.read_text())]
    assert set(engine) <= {"moe_core.analysis"}


def test_every_page_is_in_the_navigation():
    """A page file the navigation (polyroute/ui/frame.py) leaves out would open only by its URL."""
    from polyroute.ui.frame import NAVIGATION

    linked = {link.path for _, links in NAVIGATION for link in links}
    files = {path.relative_to(ROOT).as_posix() for path in _files("pages")} | {"app.py"}
    assert linked == files
