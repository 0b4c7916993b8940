"""The committed artifacts are what contracts/ compiles to, and the client loads them."""

from __future__ import annotations

from typing import Any

from marketplace.chain.artifacts import load_artifact
from marketplace.dev.compiler import EVM_VERSION


def test_committed_artifacts_match_a_fresh_compile_of_contracts(compiled: dict[str, Any]) -> None:
    for name in ("GradientMarketplace", "DevToken"):
        committed = load_artifact(name)
        fresh = compiled[name]
        assert committed["abi"] == fresh["abi"], f"{name}: ABI is stale, run `make build`"
        assert committed["bytecode"] == fresh["bytecode"], (
            f"{name}: bytecode is stale, run `make build`"
        )
        assert committed["deployedBytecode"] == fresh["deployedBytecode"]
        assert committed["compiler"]["evmVersion"] == EVM_VERSION == "cancun"


def test_runtime_code_fits_the_contract_size_limit() -> None:
    runtime = bytes.fromhex(load_artifact("GradientMarketplace")["deployedBytecode"][2:])
    assert 0 < len(runtime) <= 24_576  # EIP-170
