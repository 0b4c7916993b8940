"""Writes `marketplace/chain/reverts.py`: one Python class per custom error of the contract's
ABI, so the client's errors cannot drift from the contract's (`scripts/gen_reverts.py`, run by
`make build`; a test fails when the committed file is not what this renders).

Each class carries the error's 4-byte `SELECTOR` and its ABI `ARGUMENTS` (what the client decodes
revert data with) and, in its docstring, the error's NatSpec from `contracts/` and its Solidity
signature. Errors the contract inherits from OpenZeppelin have no NatSpec under `contracts/`:
their sentence is in `INHERITED`.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from eth_utils.crypto import keccak

from marketplace.chain.artifacts import load_artifact
from marketplace.dev.compiler import PROJECT_ROOT, read_sources

CONTRACT = "GradientMarketplace"
OUTPUT = PROJECT_ROOT / "marketplace" / "chain" / "reverts.py"
# Errors whose Python class adds behaviour: the hand-written base in marketplace/errors.py.
BASES = {"WrongPhase": "PhaseRevert"}
INHERITED = {
    "ReentrancyGuardReentrantCall": "A guarded function was re-entered (OpenZeppelin "
    "ReentrancyGuardTransient).",
    "SafeERC20FailedOperation": "An ERC-20 transfer failed or returned false (OpenZeppelin "
    "SafeERC20).",
}
WIDTH = 100
# `/// @dev text` or `/// @notice text` lines, then continuation lines, then `error Name(`.
_NATSPEC = re.compile(r"((?:[ \t]*///[^\n]*\n)+)[ \t]*error (\w+)\(")

HEADER = '''"""The contract's custom errors, one class each, GENERATED from the {contract} ABI by
`scripts/gen_reverts.py` (`make build`). Do not edit: change the contract and rebuild.

A revert arrives as an instance with its arguments by name: `except NotSponsor as e:
e.values["caller"]`. `BY_SELECTOR` is what the client decodes revert data with. Over 400 lines
because it is generated: one short class per error, nothing to split by responsibility.
"""

from __future__ import annotations

from marketplace.errors import {bases}
'''


def natspec(sources: dict[str, str]) -> dict[str, str]:
    """Each error's NatSpec text (its @dev or @notice lines, joined), from Solidity sources."""
    found = {}
    for text in sources.values():
        for comment, name in _NATSPEC.findall(text):
            lines = [line.strip().removeprefix("///").strip() for line in comment.splitlines()]
            found[name] = re.sub(r"^@(dev|notice)\s+", "", " ".join(lines))
    return found


def render(abi: list[dict[str, Any]], docs: dict[str, str]) -> str:
    """The text of reverts.py for `abi`'s errors (sorted by name), documented from `docs`."""
    items = sorted((i for i in abi if i["type"] == "error"), key=lambda i: str(i["name"]))
    bases = sorted({"ContractRevert", *BASES.values()})
    table = "".join(f"        {i['name']},\n" for i in items)
    by_selector = (
        "BY_SELECTOR: dict[bytes, type[ContractRevert]] = {\n"
        "    cls.SELECTOR: cls\n    for cls in (\n" + table + "    )\n}\n"
    )
    header = HEADER.format(contract=CONTRACT, bases=", ".join(bases))
    return "\n\n".join([header, *(_class(item, docs) for item in items), by_selector])


def _class(item: dict[str, Any], docs: dict[str, str]) -> str:
    name = item["name"]
    doc = docs.get(name) or INHERITED.get(name)
    if doc is None:
        raise ValueError(f"error {name} has no NatSpec under contracts/ and is not in INHERITED")
    if any(i["type"].startswith("tuple") for i in item["inputs"]):
        raise ValueError(f"error {name} takes a struct: spell its ABI tuple type out here first")
    params = ", ".join(f"{_solidity_type(i)} {i['name']}".strip() for i in item["inputs"])
    selector = keccak(text=f"{name}({','.join(i['type'] for i in item['inputs'])})")[:4]
    lines = [f"class {name}({BASES.get(name, 'ContractRevert')}):"]
    lines += _docstring([doc, f"`error {name}({params})`, selector 0x{selector.hex()}."])
    lines += ["", f'    SELECTOR = bytes.fromhex("{selector.hex()}")']
    arguments = [f'("{i["name"]}", "{i["type"]}"),' for i in item["inputs"]]
    if len(arguments) == 1:  # as ruff formats a one-tuple
        lines.append(f"    ARGUMENTS = ({arguments[0]})")
    elif arguments:
        lines += ["    ARGUMENTS = (", *(f"        {a}" for a in arguments), "    )"]
    return "\n".join(lines) + "\n"


def _solidity_type(argument: dict[str, Any]) -> str:
    """`enum IGradientMarketplaceTypes.Phase` -> `Phase`; other types as declared."""
    declared = str(argument.get("internalType", argument["type"]))
    return declared.split(" ", 1)[-1].rsplit(".", 1)[-1]


def _docstring(paragraphs: list[str]) -> list[str]:
    """A docstring of wrapped paragraphs, indented for a class body, within `WIDTH`."""
    body = "\n\n".join(textwrap.fill(p, WIDTH - 7) for p in paragraphs)  # indent and quotes
    lines = ('"""' + body + '"""').splitlines()
    if len(lines[-1]) + 4 > WIDTH:
        lines[-1] = lines[-1].removesuffix('"""')
        lines.append('"""')
    return [f"    {line}".rstrip() for line in lines]


def current() -> str:
    """What reverts.py must hold for the committed artifact and the contracts' NatSpec."""
    docs = natspec(read_sources(PROJECT_ROOT / "contracts"))
    return render(load_artifact(CONTRACT)["abi"], docs)
