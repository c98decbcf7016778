"""The module graph follows the layering rule of docs/architecture.md, and the rule is checked here.

Every ``import`` counts, at module level or inside a function: a function-level import is still a dependency,
and one used to break a circle hides the circle rather than removing it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "labeldistill"

# Layer of every module (a module may import modules of its own layer or below, never above).
LAYERS = [
    ("root", {"labeldistill", "labeldistill.errors"}),
    ("specs (no torch)", {"labeldistill.layout", "labeldistill.variants", "labeldistill.protocols"}),
    ("config schema (no torch)", {"labeldistill.config.schema"}),
    ("config checks (no torch)", {"labeldistill.config.checks"}),
    ("config loader (no torch)", {"labeldistill.config", "labeldistill.config.loader",
                                  "labeldistill.learn_labels.config"}),
    ("leaf", {"labeldistill.io", "labeldistill.runtime", "labeldistill.augment", "labeldistill.distributed",
              "labeldistill.resume", "labeldistill.training", "labeldistill.data", "labeldistill.models",
              "labeldistill.provenance", "labeldistill.runner", "labeldistill.main_stages",
              "labeldistill.hard_augment"}),
    ("stages", {"labeldistill.squeeze", "labeldistill.bnstats", "labeldistill.recover", "labeldistill.validate",
                "labeldistill.labels", "labeldistill.learn_labels"}),
    ("jobs and outputs", {"labeldistill.api", "labeldistill.pipeline", "labeldistill.plan", "labeldistill.report", "labeldistill.export",
                              "labeldistill.leaderboard"}),
    ("command line", {"labeldistill.cli", "labeldistill.__main__"}),
]
# Stage modules: none of them imports another (learn_labels is one stage; its modules import each other).
STAGES = {"labeldistill.squeeze", "labeldistill.bnstats", "labeldistill.recover", "labeldistill.validate",
          "labeldistill.labels.relabel", "labeldistill.labels.prune", "labeldistill.labels.generator",
          "labeldistill.learn_labels"}
TORCH_FREE = {"labeldistill", "labeldistill.errors", "labeldistill.layout", "labeldistill.variants",
              "labeldistill.config", "labeldistill.config.schema", "labeldistill.config.checks",
              "labeldistill.config.loader", "labeldistill.learn_labels.config", "labeldistill.protocols"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted((SRC / PKG).rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Project modules an import statement loads (the named module, submodules named in ``from X import y``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PKG]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PKG:
        return []
    return [target] + [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]


def _graph() -> dict[str, set[str]]:
    """module → project modules it imports.

    An import names its target explicitly (``from . import x`` inside a package's submodule names the package:
    a real circle when the package imports that submodule) and implicitly the target's parent packages, which
    Python imports first, except the importer's own parents (already being imported).
    """
    graph = {}
    for mod, path in MODULES.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(mod, path, node):
                    deps.add(target)
                    parts = target.split(".")
                    parents = {".".join(parts[:i]) for i in range(2, len(parts))}
                    deps.update(p for p in parents if not mod.startswith(p + "."))
        deps.discard(mod)
        graph[mod] = {d for d in deps if d in MODULES}
    return graph


GRAPH = _graph()


def _group(mod: str, groups) -> str | None:
    """The longest group name that ``mod`` is or lies inside."""
    best = None
    for g in groups:
        if (mod == g or mod.startswith(g + ".")) and (best is None or len(g) > len(best)):
            best = g
    return best


def _layer(mod: str) -> int:
    names = {g: i for i, (_, gs) in enumerate(LAYERS) for g in gs}
    g = _group(mod, names)
    assert g is not None, f"module {mod} has no layer: add it to LAYERS (and to docs/architecture.md)"
    return names[g]


def test_every_module_has_a_layer():
    for mod in MODULES:
        _layer(mod)


def test_layers_import_only_downward():
    bad = [f"{m} (layer {LAYERS[_layer(m)][0]}) imports {d} (layer {LAYERS[_layer(d)][0]})"
           for m, deps in GRAPH.items() for d in deps if _layer(d) > _layer(m)]
    assert not bad, "\n".join(bad)


def test_no_stage_imports_another_stage_and_labels_imports_no_stage():
    bad = []
    for m, deps in GRAPH.items():
        sm = _group(m, STAGES)
        for d in deps:
            sd = _group(d, STAGES)
            if sm and sd and sm != sd:
                bad.append(f"stage {m} imports stage {d}")
            if m.startswith("labeldistill.labels") and sd and not sd.startswith("labeldistill.labels"):
                bad.append(f"{m} (labels/) imports stage {d}")
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        path.append(m)
        for d in sorted(GRAPH[m]):
            if seen.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if d not in seen:
                visit(d)
        path.pop()
        seen[m] = 2

    for m in sorted(GRAPH):
        if m not in seen:
            visit(m)


def test_the_checker_sees_function_level_and_package_imports():
    """A function-level import and a submodule's ``from . import name`` both count as edges."""
    tree = ast.parse("def f():\n    from .recover import recover\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _resolve("labeldistill.squeeze", SRC / PKG / "squeeze.py", node) == ["labeldistill.recover"]
    node = ast.parse("from . import register_model").body[0]
    path = SRC / PKG / "models" / "convnet.py"
    assert _resolve("labeldistill.models.convnet", path, node) == ["labeldistill.models"]


def test_torch_free_modules_import_no_torch_and_loading_a_config_leaves_torch_out():
    for mod in TORCH_FREE:
        tree = ast.parse(MODULES[mod].read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
        assert not [n for n in names if n.split(".")[0] == "torch"], mod
    code = ("import sys; from labeldistill.config import load_config; "
            "load_config('configs/fmnist_demo.yaml', ['recover.modes=[cs, cda]']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kornia', 'PIL', 'safetensors')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SRC.parent, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_no_function_longer_than_60_lines():
    long = []
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{mod}.{node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_random_stream_keys_are_distinct():
    from labeldistill.augment import Stream, mode_stream
    from labeldistill.variants import BUILTIN_MODES

    values = [int(s) for s in Stream]
    assert len(values) == len(set(values))
    modes = {m: mode_stream(m) for m in BUILTIN_MODES}
    assert len(set(modes.values())) == len(modes)
    assert not set(modes.values()) & set(values)
