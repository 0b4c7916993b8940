"""The devnet: the embedded chain served over JSON-RPC HTTP (or anvil) and shared through
devnet.json; transactions, reverts, the clock and snapshots behave as they do in-process."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.middleware import SignAndSendRawMiddlewareBuilder
from web3.types import TxParams, Wei

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.dev import devnet as devnet_module
from marketplace.dev.devchain import now
from marketplace.dev.devnet import (
    ANVIL,
    Devnet,
    advance_chain_time,
    advance_chain_to,
    deployment_record,
    run_devnet,
    start_devnet,
)
from marketplace.rules.messages import Phase
from marketplace.runtime.devnet_info import (
    DEVNET_FILE,
    DevAccount,
    DevnetInfo,
    read_devnet_info,
    write_devnet_info,
)
from marketplace.wire.crypto import sha256
from tests.helpers import ETHER, SALT, VALIDATION_FILE, eth_task

TESTER_CHAIN_ID = 131277322940537


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    running = start_devnet(tmp_path, port=0)
    yield running
    running.stop()


@pytest.fixture
def http_w3(devnet: Devnet) -> Web3:
    return Web3(Web3.HTTPProvider(devnet.info.rpc_url, request_kwargs={"timeout": 10}))


def transfer(w3: Web3, sender: str, to: str, value: int, gas: int | None = None) -> HexBytes:
    tx: TxParams = {"from": to_checksum_address(sender), "to": to_checksum_address(to)}
    tx["value"] = Wei(value)
    if gas is not None:
        tx["gas"] = gas
    return w3.eth.send_transaction(tx)


def balance(w3: Web3, account: str) -> int:
    return int(w3.eth.get_balance(to_checksum_address(account)))


def rpc(url: str, method: str, *params: Any) -> Any:
    """The `result` of one raw JSON-RPC call (asserting there is no error)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    reply = httpx.post(url, json=body, timeout=10).json()
    assert "error" not in reply, reply
    return reply["result"]


def test_a_devnet_on_port_0_writes_its_file_serves_the_market_and_removes_the_file_on_stop(
    tmp_path: Path,
) -> None:
    running = start_devnet(tmp_path, port=0)
    path = tmp_path / DEVNET_FILE
    info = read_devnet_info(path)
    w3 = Web3(Web3.HTTPProvider(info.rpc_url))

    assert info == running.info
    assert (info.engine, info.chain_id, info.pid, info.deploy_block) == (
        "tester",
        TESTER_CHAIN_ID,
        os.getpid(),
        1,
    )
    assert info.rpc_url.startswith("http://127.0.0.1:") and not info.rpc_url.endswith(":0")
    assert ChainClient(w3, info.contract).task_count() == 0
    assert [account.address for account in info.accounts] == list(w3.eth.accounts)
    assert info.accounts[0].private_key == "0x" + "00" * 31 + "01"
    assert info.accounts[9].private_key == "0x" + "00" * 31 + "0a"
    running.stop()
    assert not path.exists()
    assert not w3.is_connected()  # its keep-alive connection was closed too
    with pytest.raises(httpx.ConnectError):
        httpx.post(info.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})


def test_devnet_info_round_trips_through_its_file_without_leaving_a_temp_file(
    tmp_path: Path,
) -> None:
    info = DevnetInfo(
        engine="anvil",
        rpc_url="http://127.0.0.1:8545",
        chain_id=31337,
        contract="0x5FbDB2315678afecb367f032d93F642f64180aa3",
        deploy_block=1,
        accounts=(
            DevAccount(address="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", private_key="0x01"),
        ),
        pid=1234,
    )
    path = tmp_path / "sub" / DEVNET_FILE

    write_devnet_info(path, info)
    write_devnet_info(path, info)  # replaces the file in place

    assert read_devnet_info(path) == info
    assert [p.name for p in path.parent.iterdir()] == [DEVNET_FILE]


def test_reading_a_missing_devnet_file_raises_config_error_naming_the_command(
    tmp_path: Path,
) -> None:
    path = tmp_path / DEVNET_FILE

    with pytest.raises(
        errors.ConfigError, match=r"no devnet at .*start one with `marketplace devnet`"
    ):
        read_devnet_info(path)


def test_reading_a_malformed_devnet_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / DEVNET_FILE
    path.write_text('{"engine": "tester"')

    with pytest.raises(errors.ConfigError, match="malformed file"):
        read_devnet_info(path)


def test_a_transaction_over_http_mines_and_reverts_arrive_as_the_contracts_errors(
    devnet: Devnet, http_w3: Web3
) -> None:
    sponsor, evaluator, miner = (a.address for a in devnet.info.accounts[:3])
    chain = ChainClient(http_w3, devnet.info.contract)

    created = chain.create_task(sponsor, eth_task(evaluator))

    assert created.value == 1 and chain.task_count() == 1
    assert chain.task(1).sponsor == sponsor and chain.balance(chain.address) == 10 * ETHER
    with pytest.raises(reverts.UnknownTask) as unknown:
        chain.task(99)
    assert unknown.value.values == {"taskId": 99}
    with pytest.raises(reverts.NotSponsor) as not_sponsor:  # a transaction, simulated first
        chain.reveal_validation(miner, 1, sha256(VALIDATION_FILE), SALT, "bafkreival")
    assert not_sponsor.value.values == {"taskId": 1, "caller": miner}


def test_a_transaction_signed_locally_by_a_key_the_node_does_not_hold_is_mined(
    devnet: Devnet, http_w3: Web3
) -> None:
    stranger: LocalAccount = Account.from_key("0x" + "ab" * 32)
    transfer(http_w3, devnet.info.accounts[0].address, stranger.address, 20 * ETHER)
    signing = Web3(Web3.HTTPProvider(devnet.info.rpc_url))
    signing.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(stranger), layer=0)
    chain = ChainClient(signing, devnet.info.contract)

    created = chain.create_task(stranger.address, eth_task(devnet.info.accounts[1].address))

    assert stranger.address not in http_w3.eth.accounts
    assert created.value == 1 and chain.task(1).sponsor == stranger.address
    assert signing.eth.get_transaction(HexBytes(created.tx_hash))["from"] == stranger.address


def test_increase_time_then_mine_moves_the_latest_block_exactly_that_far(
    devnet: Devnet, http_w3: Web3
) -> None:
    sponsor, evaluator = (a.address for a in devnet.info.accounts[:2])
    chain = ChainClient(http_w3, devnet.info.contract)
    chain.create_task(sponsor, eth_task(evaluator))  # 2 rounds of an hour, starting now
    before = http_w3.eth.get_block("latest")

    after = advance_chain_time(http_w3, 2 * 3600)

    assert after == before["timestamp"] + 2 * 3600
    assert http_w3.eth.block_number == before["number"] + 1
    assert chain.phase(1) == Phase.REVEAL  # the contract reads the moved clock
    assert advance_chain_to(http_w3, after + 500) == after + 500
    assert advance_chain_to(http_w3, after) == after + 500  # the past is left alone
    assert http_w3.eth.block_number == before["number"] + 2


def test_increase_time_reports_the_total_offset_and_moves_the_next_transaction_too(
    devnet: Devnet, http_w3: Web3
) -> None:
    url, sender = devnet.info.rpc_url, devnet.info.accounts[0].address
    latest = now(http_w3)

    assert rpc(url, "evm_increaseTime", 60) == 60
    assert rpc(url, "evm_increaseTime", "0x1e") == 90  # numbers or hex, as anvil takes them
    tx_hash = transfer(http_w3, sender, sender, 1)

    mined = http_w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]
    assert http_w3.eth.get_block(mined)["timestamp"] == latest + 90
    assert rpc(url, "evm_mine") == "0x0"
    assert now(http_w3) == latest + 91  # then blocks follow one second apart


def test_set_next_block_timestamp_refuses_the_past_and_fixes_the_next_block(
    devnet: Devnet, http_w3: Web3
) -> None:
    url, latest = devnet.info.rpc_url, now(http_w3)

    refused = httpx.post(
        url,
        json={"jsonrpc": "2.0", "id": 3, "method": "evm_setNextBlockTimestamp", "params": [latest]},
    ).json()
    assert refused["error"]["code"] == -32602
    assert rpc(url, "evm_setNextBlockTimestamp", latest + 1000) is None
    rpc(url, "evm_mine")
    assert now(http_w3) == latest + 1000
    rpc(url, "evm_mine", hex(latest + 2000))
    assert now(http_w3) == latest + 2000


def test_revert_to_a_snapshot_restores_the_block_and_balances_and_uses_the_snapshot_up(
    devnet: Devnet, http_w3: Web3
) -> None:
    url = devnet.info.rpc_url
    sender, receiver = (a.address for a in devnet.info.accounts[:2])
    number, held = http_w3.eth.block_number, balance(http_w3, receiver)

    snapshot = rpc(url, "evm_snapshot")
    transfer(http_w3, sender, receiver, ETHER)
    advance_chain_time(http_w3, 3600)

    assert http_w3.eth.block_number == number + 2
    assert rpc(url, "evm_revert", snapshot) is True
    assert http_w3.eth.block_number == number
    assert balance(http_w3, receiver) == held
    assert rpc(url, "evm_revert", snapshot) is False
    transfer(http_w3, sender, receiver, 1)  # mines on
    assert http_w3.eth.block_number == number + 1


def test_two_clients_sending_from_two_threads_at_once_all_get_receipts(devnet: Devnet) -> None:
    receiver = devnet.info.accounts[5].address
    start = threading.Barrier(2)
    receipts: list[Any] = []
    failures: list[BaseException] = []

    def send(sender: str) -> None:
        w3 = Web3(Web3.HTTPProvider(devnet.info.rpc_url, request_kwargs={"timeout": 10}))
        try:
            start.wait(timeout=5)
            for _ in range(5):
                tx_hash = transfer(w3, sender, receiver, 1, gas=21_000)
                receipts.append(w3.eth.wait_for_transaction_receipt(tx_hash))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(a.address,)) for a in devnet.info.accounts[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    assert [r["status"] for r in receipts] == [1] * 10
    assert len({r["blockNumber"] for r in receipts}) == 10  # one block per transaction
    w3 = Web3(Web3.HTTPProvider(devnet.info.rpc_url))
    assert balance(w3, receiver) == 1_000_000 * ETHER + 10


def test_batches_unknown_methods_and_malformed_json_are_answered_per_json_rpc(
    devnet: Devnet,
) -> None:
    url = devnet.info.rpc_url
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": "b", "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "method": "eth_chainId"},  # a notification: no reply
    ]

    assert httpx.post(url, json=batch).json() == [
        {"jsonrpc": "2.0", "id": 1, "result": hex(TESTER_CHAIN_ID)},
        {"jsonrpc": "2.0", "id": "b", "result": "0x1"},
    ]
    for method in ("foo_bar", "testing_timeTravel", "eth_getProof"):
        reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": method}).json()
        assert (reply["id"], reply["error"]["code"]) == (7, -32601), method
    malformed = httpx.post(url, content=b'{"jsonrpc": "2.0", "id": 8, "method"')
    assert malformed.status_code == 200
    assert (malformed.json()["id"], malformed.json()["error"]["code"]) == (None, -32700)
    assert httpx.post(url, json=[]).json()["error"]["code"] == -32600
    notification = httpx.post(url, json={"jsonrpc": "2.0", "method": "eth_chainId"})
    assert (notification.status_code, notification.content) == (204, b"")


def test_a_request_that_breaks_the_handler_gets_internal_error_and_the_server_serves_on(
    devnet: Devnet,
) -> None:
    url, sender = devnet.info.rpc_url, devnet.info.accounts[0].address
    no_gas = {"from": sender, "to": sender, "value": "0x1"}  # eth-tester wants an explicit gas

    broken = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 9, "method": "eth_call", "params": ["x"]}
    )
    refused = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 10, "method": "eth_sendTransaction", "params": [no_gas]}
    )

    assert (broken.json()["id"], broken.json()["error"]["code"]) == (9, -32603)
    assert refused.json()["error"] == {
        "code": -32000,
        "message": "ValidationError: Transaction is missing the required keys: 'gas'",
    }
    assert rpc(url, "eth_chainId") == hex(TESTER_CHAIN_ID)


def test_run_devnet_serves_until_sigterm_then_stops_and_removes_its_file(tmp_path: Path) -> None:
    announced: list[DevnetInfo] = []
    before = signal.getsignal(signal.SIGTERM)

    def announce(info: DevnetInfo) -> None:
        announced.append(info)
        assert rpc(info.rpc_url, "eth_chainId") == hex(TESTER_CHAIN_ID)
        assert read_devnet_info(tmp_path / DEVNET_FILE) == info
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()

    run_devnet(tmp_path, port=0, announce=announce)

    assert len(announced) == 1
    assert not (tmp_path / DEVNET_FILE).exists()
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(httpx.ConnectError):
        httpx.post(announced[0].rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})


def test_an_anvil_devnet_without_the_binary_raises_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devnet_module, "ANVIL", tmp_path / "no-anvil")

    with pytest.raises(errors.ConfigError, match="anvil is not installed"):
        start_devnet(tmp_path, port=0, engine="anvil")
    assert not (tmp_path / DEVNET_FILE).exists()


@pytest.mark.skipif(
    not ANVIL.exists(), reason="anvil is not installed (`make setup` installs @foundry-rs/anvil)"
)
def test_an_anvil_devnet_deploys_the_market_and_its_clock_moves(tmp_path: Path) -> None:
    running = start_devnet(tmp_path, port=0, engine="anvil")
    try:
        info = read_devnet_info(tmp_path / DEVNET_FILE)
        w3 = Web3(Web3.HTTPProvider(info.rpc_url, request_kwargs={"timeout": 10}))
        chain = ChainClient(w3, info.contract)
        before = now(w3)

        after = advance_chain_time(w3, 3600)

        assert running.process is not None
        assert (info.engine, info.chain_id, info.pid) == ("anvil", 31337, running.process.pid)
        assert [account.address for account in info.accounts] == list(w3.eth.accounts)
        assert info.accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        assert chain.task_count() == 0
        # anvil's clock runs on with the wall clock: at least the hour, plus the seconds spent.
        assert before + 3600 <= after <= before + 3605
        assert advance_chain_to(w3, after + 100) == after + 100
        with pytest.raises(reverts.UnknownTask):
            chain.task(99)
    finally:
        running.stop()
    assert running.process is not None and running.process.poll() is not None
    assert not (tmp_path / DEVNET_FILE).exists()


@pytest.mark.engines
def test_an_anvil_devnet_restarted_from_its_state_file_keeps_its_market_tasks_and_clock(
    tmp_path: Path,
) -> None:
    state = tmp_path / "chain.json"
    first = start_devnet(tmp_path, port=0, engine="anvil", state=state, ipfs_url="http://x:1")
    try:
        w3 = Web3(Web3.HTTPProvider(first.info.rpc_url))
        tx = eth_task(first.info.accounts[1].address)
        ChainClient(w3, first.info.contract).create_task(first.info.accounts[0].address, tx)
        moved = advance_chain_time(w3, 30 * 86_400)  # far past the wall clock
        height = w3.eth.block_number
    finally:
        first.stop()
    assert state.exists() and deployment_record(state).exists()

    second = start_devnet(tmp_path, port=0, engine="anvil", state=state)
    try:
        w3 = Web3(Web3.HTTPProvider(second.info.rpc_url))
        chain = ChainClient(w3, second.info.contract)
        assert (second.info.contract, second.info.deploy_block) == (
            first.info.contract,
            first.info.deploy_block,
        )
        assert (w3.eth.block_number, chain.task_count()) == (height, 1)
        assert first.info.ipfs_url == "http://x:1" and second.info.ipfs_url is None
        # The next block is stamped after the latest one, not at the (earlier) wall time.
        assert moved <= advance_chain_time(w3, 1) <= moved + 5
    finally:
        second.stop()


def test_only_anvil_keeps_a_state_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="only anvil keeps its chain in a state file"):
        start_devnet(tmp_path, port=0, state=tmp_path / "chain.json")


def test_programs_use_the_ipfs_node_the_devnet_file_names_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    from marketplace.runtime.config import Settings
    from marketplace.runtime.connect import open_store
    from marketplace.storage.stores import IpfsStore, LocalStore

    info = DevnetInfo(
        engine="anvil",
        rpc_url="http://127.0.0.1:1",
        chain_id=31337,
        contract="0x" + "11" * 20,
        deploy_block=1,
        accounts=(),
        pid=1,
        ipfs_url="http://127.0.0.1:5002",
    )
    write_devnet_info(tmp_path / DEVNET_FILE, info)

    from_file = open_store(Settings(data_dir=tmp_path))
    flag = open_store(Settings(data_dir=tmp_path, ipfs_url="http://127.0.0.1:5009"))
    other_chain = open_store(Settings(data_dir=tmp_path, rpc_url="http://a:1", contract="0x1"))
    no_devnet = open_store(Settings(data_dir=tmp_path / "empty"))

    assert isinstance(from_file, IpfsStore) and isinstance(flag, IpfsStore)
    assert str(from_file._client.base_url) == "http://127.0.0.1:5002/api/v0/"
    assert str(flag._client.base_url) == "http://127.0.0.1:5009/api/v0/"
    assert isinstance(other_chain, LocalStore) and isinstance(no_devnet, LocalStore)
