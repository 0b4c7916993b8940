"""Compile the Solidity sources into the artifacts the package ships.

Only a source checkout compiles (it needs the npm tools `make setup` installs, or a native
`solc` of the pinned version); an installed package reads the committed artifacts
(`marketplace/chain/artifacts/*.json`, read by `marketplace.chain.artifacts`) and needs no
Node at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from marketplace.chain.artifacts import ARTIFACTS_DIR

SOLC_VERSION = "0.8.37"
# eth-tester's py-evm runs up to Prague; solc 0.8.37 defaults to Osaka. Cancun is enough for
# the transient storage the reentrancy guard uses.
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 1_000_000

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class CompilerUnavailable(RuntimeError):
    """Neither a native solc of the pinned version nor the npm solcjs is installed."""


def find_solc(root: Path = PROJECT_ROOT) -> Path:
    """A native `solc` of the pinned version if there is one, else the solcjs wrapper."""
    native = shutil.which("solc")
    if native:
        from solcx.wrapper import get_solc_version

        if str(get_solc_version(native)) == SOLC_VERSION:
            return Path(native)
    wrapper = root / "scripts" / "solcjs-as-solc"
    if (root / "node_modules" / "solc" / "solc.js").exists():
        return wrapper
    raise CompilerUnavailable(
        f"no solc {SOLC_VERSION}: run `make setup` (installs solcjs from npm) in {root}"
    )


def standard_input(sources: dict[str, str]) -> dict[str, Any]:
    """The solc standard-JSON input for `sources` (unit name -> source text)."""
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sorted(sources.items())},
        "settings": {
            "evmVersion": EVM_VERSION,
            "viaIR": True,
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "outputSelection": {
                "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
            },
        },
    }


def read_sources(directory: Path, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Every `.sol` file under `directory`, keyed by its path relative to `root`."""
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(directory.rglob("*.sol"))
    }


def compile_sources(sources: dict[str, str], root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Compile and return {contract name: {"abi", "bytecode", "deployedBytecode"}}.

    Only contracts defined in `sources` are returned (not the imported OpenZeppelin ones).
    """
    import solcx

    output = solcx.compile_standard(
        standard_input(sources), solc_binary=find_solc(root), base_path=str(root)
    )
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("\n".join(e["formattedMessage"] for e in errors))
    contracts: dict[str, Any] = {}
    for unit in sources:
        for name, data in output["contracts"].get(unit, {}).items():
            bytecode = data["evm"]["bytecode"]["object"]
            if not bytecode:  # interfaces and abstract contracts
                continue
            contracts[name] = {
                "abi": data["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
                "compiler": {
                    "solc": SOLC_VERSION,
                    "evmVersion": EVM_VERSION,
                    "runs": OPTIMIZER_RUNS,
                },
            }
    return contracts


def write_artifacts(contracts: dict[str, Any], directory: Path = ARTIFACTS_DIR) -> list[Path]:
    """Write one `<Name>.json` per contract; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in sorted(contracts.items()):
        path = directory / f"{name}.json"
        path.write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written
