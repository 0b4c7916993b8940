"""Latency of the REST API under load, on 2 cores: one for the server, one for the clients.

A task of `--nodes` nodes is put on anvil and indexed; every node then gets a score (random,
seeded) in a report row written straight into the index, since evaluating 10,000 models is not
what this measures. `marketplace serve` (its follower, Granian and one API worker) serves the
index on core 1; wrk on core 0 keeps `--clients` connections busy on one endpoint at a time,
asking for gzip as a browser does (`--identity`: uncompressed). The endpoints take turns for
`--rounds` rounds of `--seconds` each, `/health` (no query, no body to speak of) being the
baseline of the same run.

The last line is machine-readable, with the median round's figures:

    LOAD nodes=<n> clients=<c> tree_p50_ms=<x> tree_p99_ms=<x> leaderboard_p50_ms=<x>
         leaderboard_p99_ms=<x> health_p50_ms=<x> health_p99_ms=<x>    (one line)
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from web3 import Web3

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev.devnet import (
    free_port,
    start_anvil,
    terminate,
    wait_until_answering,
    wait_until_serving,
)
from marketplace.service.indexer import Indexer

sys.path.insert(0, str(Path(__file__).parent))
from bench_indexer import fill  # noqa: E402  # the same 10,000-update task

BIN = Path(sys.executable).parent
ENDPOINTS = {
    "health": "/api/v1/health",
    "leaderboard": "/api/v1/tasks/1/leaderboard",
    "tree": "/api/v1/tasks/1/tree",
    "tree_page": "/api/v1/tasks/1/tree?limit=1000",  # for clients that take no gzip
}
# wrk's own summary lacks exact percentiles and error counts; its Lua `done` hook has both.
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK requests=%d errors=%d p50_us=%d p99_us=%d max_us=%d\\n",
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def score_every_node(index_file: Path, seed: int = 7) -> int:
    """A matching report for task 1 scoring every node; the winner's id (the best merge or
    architecture)."""
    db = sqlite3.connect(index_file)
    (evaluator,) = db.execute("SELECT json_extract(evaluators, '$[0]') FROM tasks").fetchone()
    (block,) = db.execute("SELECT max(block_number) FROM nodes").fetchone()
    rng = random.Random(seed)
    nodes = db.execute("SELECT node_id, kind FROM nodes WHERE task_id = 1").fetchall()
    rows = [
        (1, evaluator, node, 1, "", rng.randrange(10**6), rng.randrange(-(10**5), 10**5), block)
        for node, _ in nodes
    ]
    models = {node for node, kind in nodes if kind != "update"}  # an update never wins
    winner = max(
        (row for row in rows if row[2] in models), key=lambda row: (row[5], row[6], -row[2])
    )[2]
    with db:
        db.executemany("INSERT INTO report_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute(
            "INSERT INTO roots VALUES (1, ?, ?, '1', 1, 'bafyload', ?)",
            (evaluator, "0x" + "11" * 32, block),
        )
        db.execute(
            "INSERT INTO reports VALUES (1, ?, 'bafyload', 1, ?, ?)", (evaluator, winner, block)
        )
    db.close()
    return winner


def wrk(
    url: str, clients: int, seconds: int, script: Path, core: str, encoding: str
) -> dict[str, int]:
    """One wrk run on `core` (a taskset list): its WRK line's figures."""
    reply = subprocess.run(
        [
            *("taskset", "-c", core, "wrk", "-t1", f"-c{clients}", f"-d{seconds}s"),
            *("--timeout", "10s", "-H", f"Accept-Encoding: {encoding}", "-s", str(script), url),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"^WRK (.*)$", reply.stdout, re.MULTILINE)
    assert found, reply.stdout + reply.stderr
    figures = {k: int(v) for k, v in (pair.split("=") for pair in found.group(1).split())}
    return figures


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes in the task")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=5, help="per endpoint and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--identity", action="store_true", help="ask for bodies uncompressed, not gzipped"
    )
    parser.add_argument(
        "--share-cores", action="store_true", help="let server and clients run on either core"
    )
    return parser.parse_args()


def main() -> None:
    args = options()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("load_api: wrk and taskset are needed (`make setup` installs wrk)")

    anvil, rpc_url = start_anvil("127.0.0.1", 0)
    server = None
    folder = Path(tempfile.mkdtemp(prefix="gm-load-"))
    try:
        contract, index_file, winner = indexed_task(anvil, rpc_url, args.nodes, folder)
        port = free_port()
        server = serve(args, port, rpc_url, contract, index_file, folder)
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, server)
        check_served(base, args.nodes, winner)
        report(args, load(args, base, folder))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        terminate(anvil)
        shutil.rmtree(folder, ignore_errors=True)


def indexed_task(
    anvil: subprocess.Popen[bytes], rpc_url: str, nodes: int, folder: Path
) -> tuple[str, Path, int]:
    """A task of `nodes` nodes on a fresh contract, indexed and scored: (the contract's
    address, the index file, the winner's node id)."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 120}))
    wait_until_answering(w3, anvil)
    accounts = list(w3.eth.accounts)
    chain = ChainClient.deploy(w3, accounts[9], min_window=DEV_MIN_WINDOW)
    fill(chain, accounts, nodes - 1)  # and the architecture: `--nodes` in all
    index_file = folder / "index.sqlite"
    index = Indexer(chain, index_file, confirmations=0)
    index.sync()
    index.close()
    return chain.address, index_file, score_every_node(index_file)


def serve(
    args: argparse.Namespace,
    port: int,
    rpc_url: str,
    contract: str,
    index_file: Path,
    folder: Path,
) -> subprocess.Popen[bytes]:
    """`marketplace serve` on the index, on core 1 (unless `--share-cores`)."""
    return subprocess.Popen(
        [
            *([] if args.share_cores else ["taskset", "-c", "1"]),  # and its workers
            *(str(BIN / "marketplace"), "serve", "--port", str(port)),
            *("--rpc", rpc_url, "--contract", contract, "--confirmations", "0"),
            *("--index", str(index_file), "--data-dir", str(folder)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def check_served(base: str, nodes: int, winner: int) -> None:
    """The tree holds every node and the leaderboard leads with the winner; say their sizes."""
    tree = httpx.get(f"{base}{ENDPOINTS['tree']}", headers={"accept-encoding": "gzip"})
    board = httpx.get(f"{base}{ENDPOINTS['leaderboard']}").json()
    assert len(tree.json()["nodes"]) == nodes and board["entries"][0]["node_id"] == winner
    print(
        f"{nodes:,} nodes; the tree is {len(tree.content):,} bytes of JSON, "
        f"{int(tree.headers['content-length']):,} gzipped"
    )


def load(args: argparse.Namespace, base: str, folder: Path) -> dict[str, list[dict[str, int]]]:
    """wrk on every endpoint in turn, `--rounds` times, each run said: endpoint -> its runs."""
    script = folder / "report.lua"
    script.write_text(WRK_REPORT)
    runs: dict[str, list[dict[str, int]]] = {name: [] for name in ENDPOINTS}
    for round_number in range(1, args.rounds + 1):
        for name, path in ENDPOINTS.items():
            run = wrk(
                base + path,
                args.clients,
                args.seconds,
                script,
                "0,1" if args.share_cores else "0",
                "identity" if args.identity else "gzip",
            )
            assert run["errors"] == 0, run
            runs[name].append(run)
            print(
                f"round {round_number} {path}: {run['requests'] / args.seconds:,.0f} req/s, "
                f"p50 {run['p50_us'] / 1000:.1f} ms, p99 {run['p99_us'] / 1000:.1f} ms, "
                f"max {run['max_us'] / 1000:.0f} ms"
            )
    return runs


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, int]]]) -> None:
    """Each endpoint's median-round percentiles next to /health's, then the LOAD line."""
    medians = {
        name: (
            statistics.median(r["p50_us"] / 1000 for r in values),
            statistics.median(r["p99_us"] / 1000 for r in values),
        )
        for name, values in runs.items()
    }
    for name, values in runs.items():
        worst = max(r["p99_us"] for r in values) / 1000
        print(f"{name}: median round p99 {medians[name][1]:.1f} ms, worst round {worst:.1f} ms")
    health_p99 = medians["health"][1]
    for name in ("leaderboard", "tree", "tree_page"):
        print(f"{name} p99 / health p99 (median rounds): {medians[name][1] / health_p99:.2f}")
    print(
        f"LOAD nodes={args.nodes} clients={args.clients} "
        + " ".join(
            f"{name}_p50_ms={p50:.1f} {name}_p99_ms={p99:.1f}"
            for name, (p50, p99) in (
                ("tree", medians["tree"]),
                ("leaderboard", medians["leaderboard"]),
                ("health", medians["health"]),
            )
        )
    )


if __name__ == "__main__":
    main()
