"""The layering of docs/architecture.md, checked on the source (ast), so a shortcut fails here.

bottom layer (config, schemas, storage, contracts, text, templating, llm, pii, dedup)
  <- stages, side by side (ingest, instructions, prompts, inference, quality, publishing, evaluate)
  <- the run layer (runs, the CLI) <- plugins and DAGs.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "dialinsight_core"
BOTTOM = {"config", "schemas", "storage", "contracts", "text", "templating", "llm", "pii", "dedup", "dedup_index", "errors",
          "notify", "parallel", "memory"}
STAGES = {"ingest", "instructions", "prompts", "inference", "quality", "publishing", "evaluate"}
RUN = {"runs", "__main__"}
PROJECT = ("dialinsight_core", "dialinsight_airflow")


def _part(module: str) -> str:
    """'dialinsight_core.quality.rules' -> 'quality'; the package itself -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of a project module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module] if child.module.startswith(PROJECT) else []
                if child.module in PROJECT:  # "from dialinsight_core import schemas" imports the module
                    names = [f"{child.module}.{a.name}" for a in child.names]
                out.extend((n, child.lineno, inside) for n in names)
            elif isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, inside) for a in child.names if a.name.startswith(PROJECT))
            visit(child, inside)

    visit(tree, False)
    return out


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_every_core_module_has_a_layer():
    for path in CORE_FILES:
        part = _part(_module_name(path))
        assert part in BOTTOM | STAGES | RUN | {""}, f"{path.relative_to(ROOT)} is in no layer of docs/architecture.md"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_layers(path: Path):
    me = _part(_module_name(path))
    for target, line, _ in _imports(path):
        if not target.startswith("dialinsight_core"):
            raise AssertionError(f"{path.relative_to(ROOT)}:{line} imports {target}: the core never imports Airflow glue")
        other = _part(target)
        if other in ("", "__version__"):  # the package itself
            continue
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        if me in BOTTOM | {""}:
            assert other in BOTTOM, f"{where}: the bottom layer imports only the bottom layer"
        elif me in STAGES:
            assert other in BOTTOM or other == me, f"{where}: a stage imports only the bottom layer and itself"
        else:
            assert other not in RUN - {"runs"} or other == me, where


def test_core_never_imports_airflow():
    for path in CORE_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "airflow" or n.startswith("airflow.") for n in names), path


@pytest.mark.parametrize("path", [*CORE_FILES, *sorted((ROOT / "plugins").rglob("*.py")), *sorted((ROOT / "dags").glob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_function_level_project_imports_state_their_reason(path: Path):
    """A project import inside a function hides a dependency: allowed only with ``# lazy: <why>`` on
    its line or the line above."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for target, line, inside in _imports(path):
        if inside:
            assert any(re.search(r"#\s*lazy:\s*\S", lines[i]) for i in (line - 1, line - 2) if i >= 0), \
                f"{path.relative_to(ROOT)}:{line} imports {target} inside a function without '# lazy: <reason>'"


def test_contracts_import_nothing_heavy():
    """DAG files import ``contracts`` at parse time: typing only."""
    tree = ast.parse((CORE / "contracts.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
        {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "typing"}, imported


def test_parsing_the_dags_loads_no_stage_code():
    """The DAG files import only config, contracts and errors at parse time: no pyarrow, pandas, GX or engine."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path[:0] = [{str(ROOT / 'plugins')!r}, {str(ROOT)!r}]
        for path in {sorted(str(p) for p in (ROOT / "dags").glob("*.py"))!r}:
            spec = importlib.util.spec_from_file_location(path.rsplit("/", 1)[1][:-3], path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        heavy = [m for m in ("pyarrow", "pandas", "great_expectations", "vllm", "torch", "openai") if m in sys.modules]
        stages = sorted(m for m in sys.modules if m.startswith("dialinsight_core.") and m.split(".")[1] not in
                        ("config", "contracts", "errors"))
        print(heavy, stages)
        assert not heavy and not stages
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_templates_live_in_one_tree():
    assert not [p for p in CORE.rglob("*.j2") if p.parent != CORE / "templates"]
    used = set()
    for path in CORE_FILES:
        used |= set(re.findall(r"[\"']([a-z_]+(?:\{[a-z]+\})?[a-z_]*\.j2)[\"']", path.read_text(encoding="utf-8")))
    on_disk = {p.name for p in (CORE / "templates").glob("*.j2")}
    for name in used:
        if "{" not in name:
            assert name in on_disk, name


def test_docs_cited_in_code_exist():
    """Docstrings and config comments point at docs/ in this repository, never at a missing design file."""
    for path in [*CORE_FILES, *(ROOT / "dags").glob("*.py"), *(ROOT / "plugins").rglob("*.py"),
                 *(ROOT / "config").rglob("*.yaml")]:
        text = path.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, path
        for doc in re.findall(r"docs/[a-z_]+\.md", text):
            assert (ROOT / doc).is_file(), f"{path.relative_to(ROOT)} cites {doc}, which does not exist"
