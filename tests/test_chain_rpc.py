"""The client against a real JSON-RPC node (anvil from npm, started by the test): the same
calls, the same gas, and reverts decoded into the same error classes as on eth-tester."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from web3 import HTTPProvider, Web3

from marketplace.chain import reverts
from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev.compiler import PROJECT_ROOT
from marketplace.rules.messages import NodeKind, TaskParams
from marketplace.wire.crypto import sha256
from tests.helpers import SALT, VALIDATION_FILE, digest

ANVIL = PROJECT_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rpc_w3() -> Iterator[Web3]:
    assert ANVIL.exists(), "anvil is installed by `make setup` (npm @foundry-rs/anvil)"
    port = _free_port()
    process = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 10}))
        deadline = time.monotonic() + 10
        while not w3.is_connected():
            assert time.monotonic() < deadline, "anvil did not start within 10 s"
            time.sleep(0.05)
        yield w3
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_client_runs_a_task_on_anvil_with_the_gas_and_errors_of_eth_tester(
    rpc_w3: Web3,
    task_params: Callable[..., TaskParams],
    w3: Web3,
    market: ChainClient,
) -> None:
    anvil_accounts = list(rpc_w3.eth.accounts)
    sponsor, scientist, miner = anvil_accounts[0], anvil_accounts[2], anvil_accounts[3]
    on_anvil = ChainClient.deploy(rpc_w3, anvil_accounts[9], min_window=DEV_MIN_WINDOW)
    params = task_params(evaluators=(anvil_accounts[1],))
    tester_accounts = list(w3.eth.accounts)
    reference = task_params(evaluators=(tester_accounts[1],))

    created = on_anvil.create_task(sponsor, params)
    arch = on_anvil.propose_architecture(scientist, created.value or 0, digest("a"), "bafkreia")
    update = on_anvil.submit_update(miner, 1, 1, 10, digest("u"), "bafkreiu")

    assert (created.value, arch.value, update.value) == (1, 1, 2)
    assert on_anvil.nodes(1)[1].kind == NodeKind.UPDATE and on_anvil.nodes(1)[1].cid == "bafkreiu"
    # The same operations on eth-tester cost exactly the same gas.
    assert created.gas_used == market.create_task(tester_accounts[0], reference).gas_used
    assert (
        arch.gas_used
        == market.propose_architecture(tester_accounts[2], 1, digest("a"), "bafkreia").gas_used
    )
    assert (
        update.gas_used
        == market.submit_update(tester_accounts[3], 1, 1, 10, digest("u"), "bafkreiu").gas_used
    )
    with pytest.raises(reverts.NotSponsor) as exc:
        on_anvil.reveal_validation(miner, 1, sha256(VALIDATION_FILE), SALT, "bafkreival")
    assert exc.value.values == {"taskId": 1, "caller": miner}
    with pytest.raises(reverts.InvalidParent) as parent_exc:
        on_anvil.submit_update(miner, 1, 7, 10, digest("x"), "bafkreix")
    assert parent_exc.value.values == {"taskId": 1, "parent": 7}
