"""The packages of contimg and their imports, as a Mermaid diagram (GitHub draws it), made from
the import graph that `lint-imports` checks (grimp). docs/architecture.md holds its output
between the ``packages:begin`` and ``packages:end`` markers; tests/test_architecture.py fails
when the two differ.

    python tools/architecture_graph.py            # print the diagram
    python tools/architecture_graph.py --write    # regenerate docs/architecture.md's block
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grimp

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
BEGIN, END = "<!-- packages:begin (tools/architecture_graph.py --write) -->", "<!-- packages:end -->"
# drawn top to bottom in this order (the layers of pyproject.toml's contract)
ORDER = ["cli", "service", "web", "pipeline", "state", "interop", "sim", "qa", "imaging", "calibrate", "flag", "sky",
         "config", "io", "device", "bus", "offline"]


def package_edges() -> tuple[list[str], set[tuple[str, str]]]:
    """(the top-level packages and modules of contimg, {(importer, imported)} between them)."""
    graph = grimp.build_graph("contimg", cache_dir=None)
    tops = sorted({m.split(".")[1] for m in graph.modules if m.count(".") >= 1})
    edges = set()
    for a in tops:
        for b in tops:
            if a != b and graph.chain_exists(importer=f"contimg.{a}", imported=f"contimg.{b}", as_packages=True):
                # keep direct dependencies only: an import of b by some module of a
                if graph.find_matching_direct_imports(import_expression=f"contimg.{a}.** -> contimg.{b}.**") or \
                        graph.find_matching_direct_imports(import_expression=f"contimg.{a} -> contimg.{b}.**") or \
                        graph.find_matching_direct_imports(import_expression=f"contimg.{a}.** -> contimg.{b}") or \
                        graph.find_matching_direct_imports(import_expression=f"contimg.{a} -> contimg.{b}"):
                    edges.add((a, b))
    return tops, edges


def mermaid() -> str:
    tops, edges = package_edges()
    nodes = [t for t in ORDER if t in tops] + [t for t in tops if t not in ORDER]
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"    {n}[{n}]" for n in nodes]
    lines += [f"    {a} --> {b}" for a, b in sorted(edges, key=lambda e: (nodes.index(e[0]), nodes.index(e[1])))]
    lines.append("```")
    return "\n".join(lines)


def block() -> str:
    return f"{BEGIN}\n{mermaid()}\n{END}"


def current_block(text: str) -> str | None:
    if BEGIN not in text or END not in text:
        return None
    return text[text.index(BEGIN):text.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"replace the block in {DOC}")
    args = p.parse_args(argv)
    if not args.write:
        print(mermaid())
        return 0
    text = DOC.read_text()
    old = current_block(text)
    if old is None:
        print(f"{DOC}: no {BEGIN} … {END} block to replace", file=sys.stderr)
        return 1
    DOC.write_text(text.replace(old, block()))
    print(f"wrote the package diagram into {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
