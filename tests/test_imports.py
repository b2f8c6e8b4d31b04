"""The package's seams: modules reach each other only through public names, without
import cycles, and the library never imports the experiment stack.

Read from the source with ``ast`` (nothing is imported): a module may import another
module of its package (private modules such as ``_validation`` included) and that
module's public names; ``from mogjax.em import _keys`` or ``em._keys`` is refused.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mogjax", "experiments")


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


ALL = {name: path for package in PACKAGES for name, path in modules(package).items()}


def imports(name: str, path: Path):
    """``(imported module, names taken from it, private attributes used on it)``."""
    tree = ast.parse(path.read_text(), str(path))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in ALL:  # a module: from mogjax import em
                    found.append((full, []))
                    aliases[alias.asname or alias.name] = full
                else:
                    found.append((node.module, [alias.name]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    found.append((alias.name, []))
                    aliases[alias.asname or alias.name] = alias.name
    attrs = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            attrs.setdefault(aliases[node.value.id], []).append(node.attr)
    return found, attrs


def graph() -> dict[str, set[str]]:
    edges = {name: set() for name in ALL}
    for name, path in ALL.items():
        for target, _ in imports(name, path)[0]:
            if target in ALL and target != name:
                edges[name].add(target)
    return edges


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_private_name_crosses_a_module(name):
    found, attrs = imports(name, ALL[name])
    private = [f"{target}.{n}" for target, names in found for n in names
               if n.startswith("_") and not n.startswith("__")]
    private += [f"{target}.{a}" for target, used in attrs.items() for a in used]
    assert private == [], f"{name} uses private names of other modules: {private}"


CYCLE_FREE = ("mogjax", "experiments")


@pytest.mark.parametrize("package", CYCLE_FREE)
def test_no_import_cycles(package):
    edges = {m: {t for t in ts if t.split(".")[0] == package}
             for m, ts in graph().items() if m.split(".")[0] == package}
    # lazy imports inside functions count too: a cycle broken by a lazy import is a
    # shared piece that wants a module of its own
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodules
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    cycles = [c for c in cycles if not any(m in PACKAGES for m in c[:-1])]
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_library_never_imports_the_experiment_stack():
    for name, path in modules("mogjax").items():
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"hydra", "omegaconf", "mlflow", "experiments"}, name
