"""Latency of the REST API under load: a task of `--nodes` nodes on anvil, indexed, served by
`marketplace serve` (uvicorn, one process), and `--clients` concurrent clients on loopback
hammering one endpoint at a time for `--seconds` each. `/health` is measured in the same run
as the baseline. The last line is machine-readable:

    LOAD nodes=<n> clients=<c> tree_p50_ms=<x> tree_p99_ms=<x> leaderboard_p99_ms=<x>
         health_p99_ms=<x>    (one line)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from web3 import Web3

from marketplace.chain import ChainClient
from marketplace.devnet import free_port, start_anvil, terminate, wait_until_answering
from marketplace.indexer import Indexer

sys.path.insert(0, str(Path(__file__).parent))
from bench_indexer import fill  # noqa: E402  # the same 10,000-update task

BIN = Path(sys.executable).parent


async def hammer(url: str, clients: int, seconds: float) -> list[float]:
    """Latencies (s) of every request `clients` concurrent clients made in `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                reply = await client.get(url)
                latencies.append(time.perf_counter() - started)
                assert reply.status_code == 200, reply.text[:200]

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000, help="updates in the task")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    args = parser.parse_args()

    anvil, rpc_url = start_anvil("127.0.0.1", 0)
    server = None
    try:
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 120}))
        wait_until_answering(w3, anvil)
        accounts = list(w3.eth.accounts)
        chain = ChainClient.deploy(w3, accounts[9])
        fill(chain, accounts, args.nodes - 1)  # and the architecture: `--nodes` in all
        folder = Path(tempfile.mkdtemp(prefix="gm-load-"))
        index = Indexer(chain, folder / "index.sqlite", confirmations=0)
        index.sync()
        index.close()
        port = free_port()
        server = subprocess.Popen(
            [
                *(str(BIN / "marketplace"), "serve", "--port", str(port)),
                *("--rpc", rpc_url, "--contract", chain.address, "--confirmations", "0"),
                *("--index", str(folder / "index.sqlite"), "--data-dir", str(folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)

        figures: dict[str, tuple[float, float, int]] = {}
        for name, path in (
            ("health", "/health"),
            ("leaderboard", "/tasks/1/leaderboard"),
            ("tree", "/tasks/1/tree"),
        ):
            latencies = asyncio.run(hammer(base + path, args.clients, args.seconds))
            p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
            figures[name] = (p50 * 1000, p99 * 1000, len(latencies))
            print(
                f"{path}: {len(latencies):,} requests in {args.seconds:.0f} s, "
                f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
            )
        health_p99 = figures["health"][1]
        for name in ("leaderboard", "tree"):
            print(f"{name} p99 / health p99: {figures[name][1] / health_p99:.2f}")
        print(
            f"LOAD nodes={args.nodes} clients={args.clients} "
            f"tree_p50_ms={figures['tree'][0]:.1f} tree_p99_ms={figures['tree'][1]:.1f} "
            f"leaderboard_p99_ms={figures['leaderboard'][1]:.1f} health_p99_ms={health_p99:.1f}"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        terminate(anvil)


if __name__ == "__main__":
    main()
