"""The layout holds: the README's module map is the tree (every module of the three packages in
it once, every module it names present), the subpackages of `marketplace` import only the
layers below them, and no module or function is over the size bar without a reason written
beside it (issue 18)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("marketplace", "miner", "sponsor_cli")
SOURCES = (*PACKAGES, "scripts")
START, END = "<!-- module-map:start -->", "<!-- module-map:end -->"
# Lowest first: a subpackage's modules import (at their top) only from earlier layers or their
# own; `errors.py` is the root everything may import. `cli` imports `dev` inside the commands
# that need the devnet extra, never at start (tests/test_cli_options.py checks that).
LAYERS = (
    "rules",
    "wire",
    "chain",
    "storage",
    "runtime",
    "protocol",
    "delivered",
    "roles",
    "service",
    "dev",
    "cli",
)
MODULE_LINES, FUNCTION_LINES = 420, 80  # "about 400" and "about 80"


def _modules() -> list[str]:
    return sorted(
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    )


def _named_on_the_map() -> list[str]:
    """Every module the map names: a row's folder joined with each `name.py` in that row."""
    readme = (ROOT / "README.md").read_text()
    named = []
    for row in readme[readme.index(START) : readme.index(END)].splitlines():
        folder = re.match(r"\| `((?:marketplace|miner|sponsor_cli)[a-z_/]*/)`", row)
        if folder:
            named += [folder.group(1) + name for name in re.findall(r"`([a-z_]+\.py)`", row)]
    return named


def test_the_readme_module_map_is_the_tree() -> None:
    named = _named_on_the_map()
    assert sorted(set(named)) == _modules()
    assert len(named) == len(set(named))  # each module once


def _top_level_imports(path: Path) -> set[str]:
    """The `marketplace` subpackages a module imports at its top (not inside a function)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "marketplace":
            parts = node.module.split(".")
            if parts[0] == "marketplace" and parts[1] != "errors":
                found.add(parts[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "marketplace":
            found |= {alias.name for alias in node.names if alias.name != "errors"}
    return found


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for layer in LAYERS:
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        for path in sorted((ROOT / "marketplace" / layer).glob("*.py")):
            for imported in sorted(_top_level_imports(path) - allowed):
                wrong.append(f"{path.relative_to(ROOT)} imports marketplace.{imported}")
    assert wrong == []
    subpackages = {p.name for p in (ROOT / "marketplace").iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(LAYERS)


def _sources() -> list[Path]:
    return sorted(path for top in SOURCES for path in (ROOT / top).rglob("*.py"))


def test_no_module_is_over_about_400_lines_without_a_reason() -> None:
    over = [
        f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines"
        for path in _sources()
        if len((text := path.read_text()).splitlines()) > MODULE_LINES
        and "over 400 lines" not in text.lower()
    ]
    assert over == []


def test_no_function_is_over_about_80_lines_without_a_reason() -> None:
    over = []
    for path in _sources():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            said = " ".join(lines[max(0, node.lineno - 4) : node.lineno + 3]).lower()
            if length > FUNCTION_LINES and "over 80 lines" not in said:
                over.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert over == []
