"""The house's layers: the core imports no chapter, a chapter imports only earlier chapters (and
the core, the kernels and the TinyWorld corpus), and no import circle exists anywhere.

Every ``import minidecode...`` is counted, including those inside functions: a lazy import is
still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minidecode"

# The core a reader meets first, the GPU kernels (they import only the core) and the TinyWorld
# corpus (pure data): layer 0, importable from everywhere.
BASE = {"interfaces", "rope", "cache", "model", "checkpoint", "hf_adapter", "generate",
        "kernels", "tinyworld.corpus", "tinyworld.needles", "tinyworld"}
# One module (or package) per technique, in teaching order.
CHAPTER = {
    "entropy": 1, "sampling": 1, "diversity": 1,
    "adaptive": 2,
    "temperature": 3,
    "cot": 4,
    "multi_objective": 5,
    "semantic_uncertainty": 6,
    "speculative": 7, "prompt_lookup": 7,
    "attention_patterns": 8,
    "infinipot": 9, "cache_policies": 9,
}
# Tools built on the chapters: TinyWorld's trainer and evaluator, then the course machinery.
TOOLS = {"tinyworld.train": 20, "tinyworld.evaluate": 20, "tinyworld.judge": 20, "course": 30,
         "__main__": 40}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> float:
    """0 for the base, the chapter number for a technique, larger for tools."""
    for table in (TOOLS, CHAPTER):
        for prefix, level in table.items():
            if name == prefix or name.startswith(prefix + "."):
                return level
    if name in BASE or any(name.startswith(b + ".") for b in ("kernels",)):
        return 0
    raise AssertionError(f"minidecode.{name} has no layer in tests/test_layers.py: add it")


def imports_of(path: Path) -> set[str]:
    """Every minidecode module ``path`` imports (``minidecode.x.y`` -> ``x.y``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minidecode.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "minidecode":
                found |= {f"minidecode.{a.name}" for a in node.names}
            elif node.module.startswith("minidecode."):
                found.add(node.module)
    return {name.removeprefix("minidecode.") for name in found}


def resolve(name: str, known: set[str]) -> str | None:
    """The module file an import names (``from minidecode.kernels import dispatch`` names the
    package ``kernels``; a submodule import names the submodule)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {}
    for name, path in files.items():
        targets = {resolve(t, known) for t in imports_of(path)}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan 1972)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def is_package_init(name: str) -> bool:
    return (PACKAGE / name.replace(".", "/") / "__init__.py").exists() if name else True


def test_no_import_circle():
    graph = import_graph()
    # A package's __init__ re-exporting its own submodules is not a circle a reader follows.
    graph = {m: {t for t in ts if not (is_package_init(m) and t.startswith(m + "."))
                 and not (is_package_init(t) and m.startswith(t + "."))}
             for m, ts in graph.items()}
    assert cycles(graph) == []


def test_layers_point_one_way():
    wrong = []
    for module, targets in import_graph().items():
        if module == "":                       # minidecode/__init__.py: the public entry point
            continue
        for target in targets:
            if target == "":
                continue
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module} (layer {layer_of(module)}) imports {target} "
                             f"(layer {layer_of(target)})")
    assert wrong == []


def test_the_checker_catches_a_backward_import(tmp_path):
    """The two checks above fail on the two defects they exist for."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    fake = tmp_path / "mod.py"
    fake.write_text("def f():\n    from minidecode.infinipot import read_document\n")
    assert imports_of(fake) == {"infinipot"}
    assert layer_of("infinipot") > layer_of("attention_patterns")


@pytest.mark.parametrize("name", sorted(CHAPTER))
def test_every_chapter_module_exists(name):
    assert (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()
