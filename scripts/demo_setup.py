"""Where the demo runs: the in-process chain and local store, or anvil and an IPFS daemon
started for the run; the contract deployed, the accounts and their role names, and with
`--serve` the `marketplace serve` process following the chain.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from demo_report import console
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.middleware import SignAndSendRawMiddlewareBuilder

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev.devchain import local_web3
from marketplace.dev.devnet import anvil_keys, free_port, wait_until_serving
from marketplace.dev.engines import Engines
from marketplace.runtime.connect import Connection
from marketplace.runtime.timing import Stopwatch, Timed
from marketplace.storage.stores import BlobStore, IpfsStore, LocalStore


@dataclass
class DemoMarket:
    """The run's chain, store and accounts, shared by its steps."""

    w3: Web3
    chain: ChainClient
    store: BlobStore
    chain_id: int
    sponsor: LocalAccount
    evaluator: LocalAccount
    scientists: list[LocalAccount]
    owners: list[LocalAccount]
    names: dict[str, str]  # address -> role name, as the report shows it
    folder: Path
    watch: Stopwatch
    service: subprocess.Popen[bytes] | None

    def connection(self, account: LocalAccount) -> Connection:
        """What `account` acts through here: its key, the chain, the store."""
        return Connection(account, self.chain, self.store, self.chain_id)


def open_market(args: argparse.Namespace, stack: contextlib.ExitStack) -> DemoMarket:
    """The chain with the contract deployed, the store, the accounts and their role names,
    and the service following the chain if `--serve`."""
    watch = Stopwatch()
    folder = Path(tempfile.mkdtemp(prefix="gm-demo-"))
    w3, keys, blobs, urls = _setup(args.engines, folder, stack, watch)
    sponsor, evaluator_account = keys[0], keys[1]
    scientists, owners = keys[2:4], keys[4:8]
    names: dict[str, str] = {sponsor.address: "sponsor", evaluator_account.address: "evaluator"}
    names.update({a.address: f"scientist-{i + 1}" for i, a in enumerate(scientists)})
    names.update({a.address: f"miner-{i + 1}" for i, a in enumerate(owners)})
    raw_chain = ChainClient.deploy(w3, keys[9].address, min_window=DEV_MIN_WINDOW)
    service = None
    if args.serve is not None and urls is not None:
        service = _serve(args.serve, urls, raw_chain.address, folder / "service", stack)
        console.print(f"dashboard: http://127.0.0.1:{args.serve}/#/tasks/1 (follows the run live)")
    return DemoMarket(
        w3,
        cast(ChainClient, Timed(raw_chain, watch, "chain")),
        cast(BlobStore, Timed(blobs, watch, "storage")),
        int(w3.eth.chain_id),
        sponsor,
        evaluator_account,
        scientists,
        owners,
        names,
        folder,
        watch,
        service,
    )


def _setup(
    engines: bool, folder: Path, stack: contextlib.ExitStack, watch: Stopwatch
) -> tuple[Web3, list[LocalAccount], BlobStore, tuple[str, str] | None]:
    """The chain, its ten funded accounts, the blob store, and the engines' (JSON-RPC, IPFS)
    URLs: embedded (no URLs), or the real engines."""
    if not engines:
        keys = [Account.from_key(i.to_bytes(32, "big")) for i in range(1, 11)]
        return local_web3(), keys, LocalStore(folder / "blobs"), None
    keys = [Account.from_key(key) for key in anvil_keys()]
    with watch.measure("engines"):  # the start-up; stopping them comes after the figures
        w3, store, urls = start_engines(folder, stack, keys, timeout=60)
    return w3, keys, store, urls


def start_engines(
    folder: Path, stack: contextlib.ExitStack, keys: list[LocalAccount], timeout: float
) -> tuple[Web3, IpfsStore, tuple[str, str]]:
    """anvil and an IPFS daemon started in `folder` on free ports, stopped when `stack`
    closes: a client signing for `keys` (JSON-RPC `timeout` in seconds), the IPFS store, and
    their (JSON-RPC, IPFS) URLs. scripts/bench_scale.py runs on them too."""
    running = Engines(folder / "engines", free_port(), free_port())
    stack.callback(running.stop)
    info = running.start(folder / "devnet")
    w3 = Web3(Web3.HTTPProvider(info.rpc_url, request_kwargs={"timeout": timeout}))
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(keys), layer=0)
    store = IpfsStore(running.ipfs.url)
    stack.callback(store.close)
    return w3, store, (info.rpc_url, running.ipfs.url)


def _serve(
    port: int, urls: tuple[str, str], contract: str, folder: Path, stack: contextlib.ExitStack
) -> subprocess.Popen[bytes]:
    """`marketplace serve` following the run's chain, answering before the market starts."""
    rpc_url, ipfs_url = urls
    folder.mkdir(parents=True, exist_ok=True)
    log = stack.enter_context((folder / "serve.log").open("ab"))
    service = subprocess.Popen(  # its own log: nothing it writes can block the demo's output
        [
            *(str(Path(sys.executable).parent / "marketplace"), "serve", "--port", str(port)),
            *("--rpc", rpc_url, "--contract", contract, "--ipfs", ipfs_url),
            *("--confirmations", "0", "--poll", "0.5", "--data-dir", str(folder)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(lambda: (service.terminate(), service.wait(timeout=20)))
    wait_until_serving(f"http://127.0.0.1:{port}", service)
    return service
