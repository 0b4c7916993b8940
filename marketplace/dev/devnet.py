"""A local chain several processes share: the embedded eth-tester behind a JSON-RPC HTTP server
(or anvil), the marketplace deployed on it, and where to find both in `devnet.json`."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_tester.backends.pyevm.main import get_default_account_keys
from pydantic import ValidationError
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev import devchain
from marketplace.dev.compiler import PROJECT_ROOT
from marketplace.dev.rpc_server import RpcServer
from marketplace.errors import ChainError, ConfigError
from marketplace.rules.messages import Frozen
from marketplace.runtime.devnet_info import (
    DEVNET_FILE,
    DevAccount,
    DevnetInfo,
    Engine,
    read_devnet_info,
    write_devnet_info,
)
from marketplace.storage.files import write_atomically

log = logging.getLogger(__name__)

ANVIL = PROJECT_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
# eth-tester's py-evm runs Prague; anvil 1.7.1 defaults to its latest fork ("Bpo1": Osaka and
# its first blob-parameter fork). Every gas figure is the same on Bpo1, Prague and Cancun, but
# anvil is pinned to eth-tester's fork so that an anvil upgrade cannot move one.
HARDFORK = "prague"
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
START_TIMEOUT = 15.0


# ------------------------------------------------------------------ moving the clock


def advance_chain_time(w3: Web3, seconds: int) -> int:
    """Move the chain's clock forward by `seconds` and mine a block; returns the latest block's
    time. In-process: exactly `seconds` later. Over HTTP (this server, anvil): at least that."""
    if seconds < 0:
        raise ValueError("the chain's clock only moves forward")
    if isinstance(w3.provider, EthereumTesterProvider):
        return devchain.advance_time(w3, seconds)
    _rpc(w3, "evm_increaseTime", [seconds])
    _rpc(w3, "evm_mine", [])
    return devchain.now(w3)


def advance_chain_to(w3: Web3, timestamp: int) -> int:
    """Mine a block at `timestamp` unless the chain is already there; returns the latest time."""
    if isinstance(w3.provider, EthereumTesterProvider):
        return devchain.advance_to(w3, timestamp)
    if timestamp > devchain.now(w3):
        _rpc(w3, "evm_setNextBlockTimestamp", [timestamp])
        _rpc(w3, "evm_mine", [])
    return devchain.now(w3)


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    try:
        return w3.manager.request_blocking(RPCEndpoint(method), params)
    except Web3RPCError as exc:
        raise ChainError(f"the node does not support {method}: {exc}") from None


# ------------------------------------------------------------------ the devnet


@dataclass
class Devnet:
    """A running devnet: the RPC server (or anvil process) and what `devnet.json` says."""

    info: DevnetInfo
    path: Path
    server: RpcServer | None = None
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop serving (terminate the anvil this devnet started) and remove its file."""
        if self.server is not None:
            self.server.stop()
        if self.process is not None:
            terminate(self.process)
        with contextlib.suppress(ConfigError, FileNotFoundError):
            if read_devnet_info(self.path) == self.info:  # not a newer devnet's file
                self.path.unlink()


def start_devnet(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8545,
    engine: Engine = "tester",
    *,
    ipfs_url: str | None = None,
    state: Path | None = None,
) -> Devnet:
    """Start a chain, deploy the marketplace on it from account 9, write `devnet.json`.

    `state` (anvil only): load the chain from this file if it exists and keep it there, so a
    restarted devnet carries on with the marketplace and every task it had.
    """
    if state is not None and engine != "anvil":
        raise ConfigError("only anvil keeps its chain in a state file (--engine anvil)")
    server, process = None, None
    if engine == "tester":
        server = RpcServer(host=host, port=port)
        server.start()
        url, pid = server.url, os.getpid()
        keys = [key.to_hex() for key in get_default_account_keys()]
    else:
        process, url = start_anvil(host, port, state)
        pid = process.pid
        keys = anvil_keys()
    try:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
        wait_until_answering(w3, process)
        record = None if state is None else deployment_record(state)
        info = deploy_market(w3, url, engine, keys, pid=pid, ipfs_url=ipfs_url, record=record)
        path = data_dir / DEVNET_FILE
        write_devnet_info(path, info)
    except BaseException:
        if server is not None:
            server.stop()
        if process is not None:
            terminate(process)
        raise
    log.info("devnet (%s) at %s, marketplace at %s", engine, url, info.contract)
    return Devnet(info, path, server=server, process=process)


def anvil_keys(count: int = 10) -> list[str]:
    """The private keys of anvil's funded dev accounts (its default mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.to_0x_hex()
        for i in range(count)
    ]


class Deployment(Frozen):
    """Where the marketplace was deployed on a chain that outlives its process."""

    chain_id: int
    contract: str
    deploy_block: int


def deployment_record(state: Path) -> Path:
    """The file beside an anvil state file that remembers the marketplace deployed in it."""
    return state.with_name(state.name + ".deployment.json")


def deploy_market(
    w3: Web3,
    rpc_url: str,
    engine: Engine,
    keys: list[str],
    *,
    pid: int,
    ipfs_url: str | None = None,
    record: Path | None = None,
) -> DevnetInfo:
    """Deploy the marketplace from dev account 9, or reuse the one `record` names if the chain
    still holds it (a chain restarted from its state); its clock resumes where it stopped."""
    accounts = tuple(
        DevAccount(address=Account.from_key(key).address, private_key=key) for key in keys
    )
    chain_id = int(w3.eth.chain_id)
    deployment = _recorded_deployment(w3, chain_id, record)
    if deployment is not None:
        resume_clock(w3)
    else:
        market = ChainClient.deploy(w3, accounts[9].address, min_window=DEV_MIN_WINDOW)
        deployment = Deployment(
            chain_id=chain_id, contract=market.address, deploy_block=w3.eth.block_number
        )
        if record is not None:
            write_atomically(record, deployment.model_dump_json())
    return DevnetInfo(
        engine=engine,
        rpc_url=rpc_url,
        chain_id=chain_id,
        contract=deployment.contract,
        deploy_block=deployment.deploy_block,
        accounts=accounts,
        pid=pid,
        ipfs_url=ipfs_url,
    )


def _recorded_deployment(w3: Web3, chain_id: int, record: Path | None) -> Deployment | None:
    if record is None or not record.exists():
        return None
    try:
        deployment = Deployment.model_validate_json(record.read_bytes())
    except (OSError, ValidationError):
        log.warning("ignoring the unreadable deployment record %s", record)
        return None
    address = Web3.to_checksum_address(deployment.contract)
    if deployment.chain_id != chain_id or not w3.eth.get_code(address):
        return None  # the state was lost: deploy afresh
    return deployment


def resume_clock(w3: Web3) -> None:
    """Anvil restarted from a state file forgets how far its clock was moved and would stamp
    the next block with the wall time, before the latest one: move it back to the chain's time."""
    latest = devchain.now(w3)
    ahead = latest - int(time.time())
    if ahead > 0:
        _rpc(w3, "evm_increaseTime", [ahead])


def run_devnet(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8545,
    engine: Engine = "tester",
    *,
    announce: Callable[[DevnetInfo], None],
    ipfs_url: str | None = None,
    state: Path | None = None,
) -> None:
    """Serve a devnet until SIGINT or SIGTERM, then stop it cleanly (main thread only)."""
    stopping = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in handled}
    try:
        devnet = start_devnet(data_dir, host, port, engine, ipfs_url=ipfs_url, state=state)
        try:
            announce(devnet.info)
            while not stopping.wait(0.5):
                pass
        finally:
            devnet.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def anvil_command(host: str, port: int, state: Path | None = None) -> list[str]:
    """anvil bound to `host`, quiet; with `state`, loaded from and saved to that file (every
    second, and on exit), so even a killed anvil loses at most a second of blocks."""
    if not ANVIL.exists():
        raise ConfigError(f"anvil is not installed at {ANVIL}: run `make setup`")
    command = [str(ANVIL), "--host", host, "--port", str(port), "--silent", "--hardfork", HARDFORK]
    if state is not None:
        command += ["--state", str(state), "--state-interval", "1"]
    return command


def start_anvil(
    host: str, port: int, state: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """anvil on `host:port` (0: a free port) as a child process; (process, its URL)."""
    if port == 0:
        port = free_port(host)
    command = anvil_command(host, port, state)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://{host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (another process may still take it first)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_answering(w3: Web3, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not w3.is_connected():
        if process is not None and process.poll() is not None:
            raise ConfigError(f"anvil exited with code {process.returncode} (is the port in use?)")
        if time.monotonic() > deadline:
            raise ConfigError(f"the chain did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.05)


def wait_until_serving(url: str, process: subprocess.Popen[Any]) -> None:
    """Wait for `marketplace serve` at `url` (http://host:port) to answer /api/v1/health."""
    import httpx

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise ConfigError(f"marketplace serve exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise ConfigError(f"marketplace serve did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.2)


def terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
