"""Shared fixtures: a fresh eth-tester chain per test, the deployed market, test contracts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev import compiler
from marketplace.dev.devchain import advance_time as _advance_time
from marketplace.dev.devchain import advance_to as _advance_to
from marketplace.dev.devchain import local_web3
from marketplace.dev.devnet import Devnet, start_devnet
from marketplace.rules.messages import TaskParams
from tests.helpers import eth_task

ROOT = compiler.PROJECT_ROOT
TEST_CONTRACTS = ROOT / "tests" / "contracts"
BUILD_DIR = ROOT / ".build"


def _all_sources() -> dict[str, str]:
    return {**compiler.read_sources(ROOT / "contracts"), **compiler.read_sources(TEST_CONTRACTS)}


@pytest.fixture(scope="session")
def compiled() -> dict[str, Any]:
    """Every contract of contracts/ and tests/contracts/, compiled now from the sources.

    Cached under .build/ by a hash of the sources and compiler settings, so only a change
    recompiles (solcjs with via-IR takes about 15 s).
    """
    sources = _all_sources()
    key = hashlib.sha256(
        json.dumps(compiler.standard_input(sources), sort_keys=True).encode()
    ).hexdigest()[:16]
    cache = BUILD_DIR / f"contracts-{key}.json"
    if cache.exists():
        cached: dict[str, Any] = json.loads(cache.read_text())
        return cached
    contracts = compiler.compile_sources(sources)
    BUILD_DIR.mkdir(exist_ok=True)
    cache.write_text(json.dumps(contracts))
    return contracts


@pytest.fixture
def w3() -> Web3:
    return local_web3()


@pytest.fixture
def accounts(w3: Web3) -> list[str]:
    return list(w3.eth.accounts)


@pytest.fixture
def sponsor(accounts: list[str]) -> str:
    return accounts[0]


@pytest.fixture
def evaluator(accounts: list[str]) -> str:
    return accounts[1]


@pytest.fixture
def market(w3: Web3, accounts: list[str]) -> ChainClient:
    return ChainClient.deploy(w3, accounts[9], min_window=DEV_MIN_WINDOW)


@pytest.fixture
def deploy(w3: Web3, accounts: list[str], compiled: dict[str, Any]) -> Callable[..., Contract]:
    """deploy("MockERC20", *constructor_args) -> a web3 contract (deployed by accounts[9])."""

    def _deploy(name: str, *args: Any) -> Contract:
        artifact = compiled[name]
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        tx_hash = factory.constructor(*args).transact({"from": accounts[9], "gas": 5_000_000})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        return w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])

    return _deploy


@pytest.fixture
def advance_time(w3: Web3) -> Callable[[int], int]:
    """advance_time(seconds) -> the new block time."""
    return lambda seconds: _advance_time(w3, seconds)


@pytest.fixture
def advance_to(w3: Web3) -> Callable[[int], int]:
    """advance_to(timestamp) -> the new block time."""
    return lambda timestamp: _advance_to(w3, timestamp)


@pytest.fixture
def task_params(evaluator: str) -> Callable[..., TaskParams]:
    """task_params(**overrides) -> TaskParams for a 2-round ETH task with one evaluator."""

    def _params(**overrides: Any) -> TaskParams:
        return eth_task(evaluator, **overrides)

    return _params


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """A devnet (eth-tester over JSON-RPC on a free port) shared by a module's CLI tests."""
    running = start_devnet(tmp_path_factory.mktemp("devnet"), port=0)
    yield running
    running.stop()
