"""The real engines: anvil and an IPFS daemon started by `marketplace.dev.engines` (what
`scripts/engines.sh` runs), the CIDs the daemon gives against `LocalStore`'s, `blobs push`, and
the faults: the daemon stopped under a miner's upload, anvil restarted under every program."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner
from web3 import Web3

from marketplace.chain.client import ChainClient
from marketplace.chain.events import Claimed, PayoutRootPosted
from marketplace.cli.app import app as marketplace_app
from marketplace.dev.devnet import advance_chain_to, free_port, start_devnet
from marketplace.dev.engines import Engines, Ipfs, ProcessRecord, start_ticks
from marketplace.errors import StoreUnavailable
from marketplace.protocol.reports import agreed_report
from marketplace.protocol.tasks import read_spec
from marketplace.rules.messages import NodeKind, Phase
from marketplace.runtime.devnet_info import read_devnet_info
from marketplace.runtime.faults import PAUSE_ENV, PAUSE_FILE_ENV
from marketplace.service.push import task_cids
from marketplace.storage.stores import IpfsStore, LocalStore
from marketplace.wire.cid import CHUNK_SIZE, cid_binary
from marketplace.wire.crypto import sha256
from sponsor_cli.app import app as sponsor_app
from tests.programs import create_task, ok, run, start, write_inputs

pytestmark = pytest.mark.engines

KIB, MIB = 1024, 1024 * 1024
runner = CliRunner()


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    folder = tmp_path_factory.mktemp("engines")
    running = Engines(folder / "engines", free_port(), free_port())
    running.start(folder / "d")
    yield running
    running.stop()


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses process `pid` listens on (its socket inodes in /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = fd.readlink().as_posix() if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                if len(address) == 8:
                    host = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    host = "ipv6:" + address
                found.add((host, int(port, 16)))
    return found


# ------------------------------------------------------------------ start, status, stop


def test_start_status_and_stop_end_exactly_the_recorded_processes(tmp_path: Path) -> None:
    engines = Engines(tmp_path / "e", free_port(), free_port())
    info = engines.start(tmp_path / "d")
    try:
        statuses = engines.status()
        assert [(s.name, s.running, s.answering) for s in statuses] == [
            ("anvil", True, True),
            ("ipfs", True, True),
        ]
        pids = {s.name: s.pid for s in statuses}
        assert all(pid is not None for pid in pids.values())
        # Loopback only; the IPFS node serves its RPC API and nothing else (no swarm, gateway).
        assert listening(pids["anvil"]) == {("127.0.0.1", engines.anvil_port)}  # type: ignore[arg-type]
        assert listening(pids["ipfs"]) == {("127.0.0.1", engines.ipfs_port)}  # type: ignore[arg-type]
        config = json.loads((tmp_path / "e" / "ipfs" / "config").read_text())
        assert (config["Addresses"]["Swarm"], config["Bootstrap"]) == ([], [])
        assert config["Discovery"]["MDNS"]["Enabled"] is False
        # devnet.json sends every program to both.
        assert read_devnet_info(tmp_path / "d" / "devnet.json") == info
        assert (info.engine, info.ipfs_url) == ("anvil", engines.ipfs.url)
        # Starting again starts nothing and keeps the deployment; the folder alone says it all.
        assert engines.start(tmp_path / "d").contract == info.contract
        assert {s.name: s.pid for s in Engines(tmp_path / "e").status()} == pids
    finally:
        stopped = Engines(tmp_path / "e").stop()
    assert stopped == [("ipfs", True), ("anvil", True)]
    assert [start_ticks(pid) for pid in pids.values()] == [None, None]  # type: ignore[arg-type]
    assert [s.running for s in engines.status()] == [False, False]
    assert sorted(p.name for p in (tmp_path / "e").glob("*.pid")) == []
    # Restarted, anvil carries the chain on from its state file: the same marketplace.
    again = engines.start(tmp_path / "d")
    try:
        assert (again.contract, again.deploy_block) == (info.contract, info.deploy_block)
    finally:
        engines.stop()


def test_stop_leaves_alone_a_process_that_took_a_recorded_pid(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        ticks = start_ticks(other.pid)
        assert ticks is not None
        engines = Engines(tmp_path)
        record = ProcessRecord(pid=other.pid, started=ticks + 1, url="x", command=("anvil",))
        engines.anvil.pid_file.write_text(record.model_dump_json())
        assert engines.stop() == [("ipfs", False), ("anvil", False)]
        assert other.poll() is None and not engines.anvil.pid_file.exists()
        # The same PID with its real start time is the recorded process: stop ends it.
        real = record.model_copy(update={"started": ticks})
        engines.anvil.pid_file.write_text(real.model_dump_json())
        assert engines.stop() == [("ipfs", False), ("anvil", True)]
        assert other.wait(timeout=5) == -15
    finally:
        other.kill()
        other.wait()


# ------------------------------------------------------------------ CIDs: the daemon is the oracle

SIZES = [0, 1, 256 * KIB - 1, 256 * KIB, 256 * KIB + 1, MIB, 10 * MIB]
SIZES += random.Random(5).sample(range(2, 3 * MIB), 3)


@pytest.mark.parametrize("size", SIZES)
def test_the_daemon_names_bytes_as_the_local_store_does(
    engines: Engines, tmp_path: Path, size: int
) -> None:
    data = random.Random(size).randbytes(size)
    local_cid = LocalStore(tmp_path).put(data)
    reply = httpx.post(
        f"{engines.ipfs.url}/api/v0/add",
        params={"cid-version": 1, "raw-leaves": "true", "chunker": f"size-{CHUNK_SIZE}"},
        files={"file": ("blob", data)},
        timeout=60,
    )
    daemon_cid = json.loads(reply.text.splitlines()[-1])["Hash"]
    assert cid_binary(daemon_cid) == cid_binary(local_cid), (size, daemon_cid, local_cid)
    with IpfsStore(engines.ipfs.url) as node:
        assert node.get(local_cid, size) == data


def test_blobs_push_makes_the_chains_cids_resolve_on_ipfs(engines: Engines, tmp_path: Path) -> None:
    write_inputs(tmp_path)
    devnet = start_devnet(tmp_path / "d", port=0)  # eth-tester and the local store
    try:
        data = ["--data-dir", str(tmp_path / "d")]
        for args in (
            ["task", "create", "--validation", str(tmp_path / "val.csv"), "--bounty", "1"],
            ["arch", "propose", "--task", "1", "--spec", str(tmp_path / "mlp.json"), "--seed", "1"],
        ):
            extra = ["--evaluator", "dev:1"] if args[0] == "task" else []
            result = runner.invoke(sponsor_app, [*args, *extra, "--account", "0", *data])
            assert result.exit_code == 0, result.output
        chain = ChainClient(Web3(Web3.HTTPProvider(devnet.info.rpc_url)), devnet.info.contract)
        local = LocalStore(tmp_path / "d" / "blobs")
        cids = task_cids(chain, local, 1)
        assert len(cids) == 3  # the spec, the sealed validation set, the architecture
        url = engines.ipfs.url
        push = ["blobs", "push", "--task", "1", "--ipfs", url, *data]
        pushed = runner.invoke(marketplace_app, push)
        assert pushed.exit_code == 0, pushed.output
        total = sum(len(local.get(cid, 1 << 30)) for cid in cids)
        assert f"pushed 3 blobs ({total:,} bytes)" in pushed.output
        with IpfsStore(url) as node:
            for cid in cids:
                assert node.get(cid, 1 << 30) == local.get(cid, 1 << 30)
            assert read_spec(chain, node, 1).validation_cid == cids[1]
        # A program pointed at IPFS reads the task with the local folder gone.
        (tmp_path / "d" / "blobs").rename(tmp_path / "moved")
        shown = runner.invoke(sponsor_app, ["task", "show", "1", "--ipfs", url, *data])
        assert shown.exit_code == 0, shown.output
        everything = runner.invoke(
            marketplace_app,
            ["blobs", "push", "--ipfs", url, "--data-dir", str(tmp_path / "none")],
        )
        assert everything.exit_code == 0 and "pushed 0 blobs" in everything.output
    finally:
        devnet.stop()


# ------------------------------------------------------------------ faults


def test_a_daemon_killed_during_an_add_fails_it_cleanly_and_a_retry_succeeds(
    tmp_path: Path,
) -> None:
    ipfs = Ipfs(tmp_path, free_port())
    ipfs.start()
    try:
        data = random.Random(1).randbytes(96 * MIB)
        store = IpfsStore(ipfs.url, retries=1, backoff=0.1)
        failure: list[BaseException] = []

        def add() -> None:
            try:
                store.put(data)
            except BaseException as exc:
                failure.append(exc)

        adding = threading.Thread(target=add)
        adding.start()
        time.sleep(0.3)  # the add is streaming 96 MiB
        ipfs.kill()
        adding.join(timeout=30)
        assert len(failure) == 1 and isinstance(failure[0], StoreUnavailable), failure
        ipfs.start()  # a killed node leaves its repo locked; start clears that
        cid = store.put(data)
        assert store.get(cid, len(data)) == data
    finally:
        ipfs.stop()


@pytest.fixture
def market(tmp_path: Path) -> Iterator[tuple[Path, Engines, ChainClient, Web3]]:
    """Task 1 on anvil + IPFS, with its inputs in tmp_path."""
    write_inputs(tmp_path)
    engines = Engines(tmp_path / "engines", free_port(), free_port())
    info = engines.start(tmp_path / "d")
    try:
        create_task(tmp_path)
        w3 = Web3(Web3.HTTPProvider(info.rpc_url))
        yield tmp_path, engines, ChainClient(w3, info.contract), w3
    finally:
        engines.stop()


def wait_for(condition: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def updates_of(chain: ChainClient) -> list[tuple[int, str]]:
    return sorted((r.round, r.author) for r in chain.nodes(1) if r.kind is NodeKind.UPDATE)


def test_the_miner_rides_out_an_ipfs_restart_during_its_upload(
    market: tuple[Path, Engines, ChainClient, Web3],
) -> None:
    folder, engines, chain, _ = market
    gate = folder / "gate"
    gate.touch()
    once = ("--task", "1", "--data", "shard0.csv", "--account", "4", "--once")
    miner = start(
        folder,
        "miner",
        "run",
        *once,
        *("--epochs", "1", "--poll", "0.2"),
        **{PAUSE_ENV: "miner:uploading", PAUSE_FILE_ENV: str(gate)},
    )
    try:
        wait_for(Path(f"{gate}.reached").exists)  # trained and sealed; the add comes next
        engines.ipfs.stop()
        gate.unlink()
        time.sleep(5)  # it tries, and waits
        assert updates_of(chain) == [] and miner.poll() is None
        engines.ipfs.start()
        output, _ = miner.communicate(timeout=90)
    finally:
        miner.kill()
    assert miner.returncode == 0, output
    assert "waiting for the engines (IPFS:" in output, output
    assert "the engines answer again" in output and "round 0: submitted" in output
    assert "node 2 (parent 1," in output
    author = read_devnet_info(folder / "d" / "devnet.json").accounts[4].address
    assert updates_of(chain) == [(0, author)]
    (update,) = [r for r in chain.nodes(1) if r.kind is NodeKind.UPDATE]
    with IpfsStore(engines.ipfs.url) as node:
        assert sha256(node.get(update.cid, 1 << 26)) == update.digest
    assert list((folder / "d" / "state" / "sealed").iterdir()) == []  # uploaded, let go
    again = ok(run(folder, "miner", "run", *once))
    assert "already submitted node 2" in again
    assert updates_of(chain) == [(0, author)]


def test_every_program_carries_on_when_anvil_restarts_from_its_state_file(
    market: tuple[Path, Engines, ChainClient, Web3],
) -> None:
    folder, engines, chain, w3 = market
    info = read_devnet_info(folder / "d" / "devnet.json")
    common = ("--task", "1", "--epochs", "1", "--poll", "0.2")
    programs = [
        start(folder, "miner", "run", *common, "--data", f"shard{i}.csv", "--account", str(a))
        for i, a in enumerate((4, 5))
    ] + [start(folder, "marketplace", "evaluate", "--task", "1", "--account", "1", "--poll", "0.2")]
    authors = [info.accounts[a].address for a in (4, 5)]
    try:
        wait_for(lambda: len(updates_of(chain)) == 2)
        height = w3.eth.block_number
        chain_time = w3.eth.get_block("latest")["timestamp"]
        engines.anvil.stop()  # anvil saves its chain to its state file as it exits
        time.sleep(3)
        restarted = engines.start(folder / "d")  # anvil again; the IPFS node never stopped
        assert restarted.contract == info.contract and restarted.pid != info.pid
        assert w3.eth.block_number == height
        assert w3.eth.get_block("latest")["timestamp"] == chain_time
        advance_chain_to(w3, chain.task(1).round_end(0))
        wait_for(lambda: len(updates_of(chain)) == 4)
        advance_chain_to(w3, chain.task(1).round_end(1))
        wait_for(lambda: sum(r.kind is NodeKind.MERGE for r in chain.nodes(1)) == 2)
        ok(run(folder, "sponsor", "task", "reveal", "1", "--account", "0"))
        wait_for(lambda: chain.events(PayoutRootPosted, task_id=1) != [])
        advance_chain_to(w3, chain.task(1).challenge_end)
        ok(run(folder, "sponsor", "task", "finalize", "1", "--account", "0"))
        outputs = [program.communicate(timeout=120)[0] for program in programs]
    finally:
        for program in programs:
            program.kill()
    assert [program.returncode for program in programs] == [0, 0, 0], outputs
    assert all("waiting for the engines (Ethereum node" in out for out in outputs), outputs
    assert updates_of(chain) == sorted((r, a) for r in (0, 1) for a in authors)
    with IpfsStore(engines.ipfs.url) as node:
        paid = {p.account for p in agreed_report(chain, node, 1).payouts if p.amount > 0}
    claimed = {e.account for e in chain.events(Claimed, task_id=1)}
    assert claimed == paid & set(authors) and claimed
    assert chain.phase(1) is Phase.CLAIMS
    assert "matches" in ok(run(folder, "marketplace", "verify", "--task", "1"))
