"""The project's packages and their import graphs, for checking the layering.

`python -m core.layers` prints each package's imports of other project packages (every import, lazy ones
inside functions and `TYPE_CHECKING` ones included, as grimp sees them) and the cycles among them, then the
cycles among modules (`module_graph`: the same imports, file by file, inside a package too); it exits 1 if
there is a cycle at either level. import-linter (`lint-imports`, contracts in pyproject.toml) checks the
layer order itself."""

from __future__ import annotations

import sys

# Top to bottom, as in pyproject.toml's layers contract.
PACKAGES = ["cli", "benchmarks", "api", "eval", "planner", "routing", "generators", "discriminators", "sqlbox", "core"]


def package_graph(packages: list[str] = PACKAGES) -> dict[str, set[str]]:
    """package -> the other project packages it imports (needs grimp, installed with import-linter)."""
    import grimp

    g = grimp.build_graph(*packages, cache_dir=None)
    edges: dict[str, set[str]] = {p: set() for p in packages}
    for m in g.modules:
        a = m.split(".")[0]
        for d in g.find_modules_directly_imported_by(m):
            b = d.split(".")[0]
            if a != b and b in edges:
                edges[a].add(b)
    return edges


def module_graph(packages: list[str] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports directly (every import: top-level, lazy inside functions,
    under `TYPE_CHECKING`). A package's `__init__` is a module of its own name."""
    import grimp

    g = grimp.build_graph(*packages, cache_dir=None)
    return {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}


def package_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted: packages, or modules
    (`module_graph`)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    edges = package_graph()
    for p in PACKAGES:
        print(f"{p:15s} -> {', '.join(sorted(edges[p])) or '-'}")
    cycles = package_cycles(edges)
    print("package cycles:", "; ".join(" <-> ".join(c) for c in cycles) if cycles else "none")
    modules = module_graph()
    module_cycles = package_cycles(modules)
    print(f"module cycles ({len(modules)} modules):",
          "; ".join(" <-> ".join(c) for c in module_cycles) if module_cycles else "none")
    return 1 if cycles or module_cycles else 0


if __name__ == "__main__":
    sys.exit(main())
