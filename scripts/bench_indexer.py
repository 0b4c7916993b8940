"""How fast the indexer takes the marketplace's events from a local node into SQLite.

Starts anvil, fills one task with `--events` updates (mined about 150 to a block), then
times, over the same blocks and in the same batches:
- the baseline: raw `eth_getLogs` requests alone, no decoding (what any indexer must pay);
- web3's way: `get_logs` and `process_log` per event (decoding only, nothing stored);
- `Indexer.sync()`: fetch, decode, derive rows, write SQLite (WAL), commit per batch.
The last line is machine-readable:

    INDEXER events=<n> events_per_s=<rate> baseline_events_per_s=<rate> ratio=<indexer/baseline>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hexbytes import HexBytes
from web3 import Web3
from web3.types import RPCEndpoint

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev.devnet import start_anvil, terminate, wait_until_answering
from marketplace.rules.messages import TaskParams
from marketplace.service.indexer import Indexer
from marketplace.wire.crypto import sha256

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EVENT_NAMES = ("TaskCreated", "ArchitectureProposed", "UpdateSubmitted")
GAS_PRICE = hex(100 * 10**9)  # far above any base fee a burst of blocks reaches


def fill(chain: ChainClient, accounts: list[str], updates: int) -> None:
    """A task with an architecture and `updates` updates of it, sent without waiting."""
    params = TaskParams(
        bounty=10**18,
        deposit=0,
        validation_commit=bytes(32),
        spec_digest=sha256(b"{}"),
        spec_cid=CID,
        round_duration=10**6,
        rounds=1,
        reveal_window=3600,
        evaluation_window=3600,
        challenge_window=600,
        claim_window=86_400,
        evaluators=(accounts[1],),
    )
    task_id = chain.create_task(accounts[0], params).value
    chain.propose_architecture(accounts[2], task_id, sha256(b"arch"), CID)  # type: ignore[arg-type]
    submit = chain.contract.functions.submitUpdate
    send = chain.w3.provider.make_request  # one request a transaction: the node fills the rest
    send(RPCEndpoint("evm_setAutomine"), [False])  # mined below, many to a block
    last = {}
    for i in range(updates):
        sender = accounts[2 + i % 8]
        data = submit(task_id, 1, 1, 0, sha256(i.to_bytes(4, "big")), bytes(32), CID)
        tx = {"from": sender, "to": chain.address, "gas": hex(200_000), "gasPrice": GAS_PRICE}
        reply = send(
            RPCEndpoint("eth_sendTransaction"), [{**tx, "data": data._encode_transaction_data()}]
        )
        last[sender] = reply["result"]
        if i % 2000 == 1999:
            print(f"sent {i + 1:,} updates", flush=True)
    while int(send(RPCEndpoint("txpool_status"), [])["result"]["pending"], 16):
        send(RPCEndpoint("evm_mine"), [])
    send(RPCEndpoint("evm_setAutomine"), [True])
    for tx_hash in last.values():
        assert chain.w3.eth.get_transaction_receipt(tx_hash)["status"] == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="updates to index")
    parser.add_argument("--batch", type=int, default=2_000, help="blocks per eth_getLogs")
    args = parser.parse_args()

    process, url = start_anvil("127.0.0.1", 0)
    try:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 120}))
        wait_until_answering(w3, process)
        accounts = list(w3.eth.accounts)
        chain = ChainClient.deploy(w3, accounts[9], min_window=DEV_MIN_WINDOW)
        started = time.perf_counter()
        fill(chain, accounts, args.events)
        print(f"filled {args.events:,} updates in {time.perf_counter() - started:.1f} s")
        head = int(w3.eth.block_number)

        ranges = [(a, min(head, a + args.batch - 1)) for a in range(0, head + 1, args.batch)]
        query = {"address": chain.address}
        started = time.perf_counter()
        fetched = 0
        for first, last in ranges:
            range_query = {**query, "fromBlock": hex(first), "toBlock": hex(last)}
            reply = w3.provider.make_request(RPCEndpoint("eth_getLogs"), [range_query])
            fetched += len(reply["result"])
        baseline = fetched / (time.perf_counter() - started)

        events = {HexBytes(e.topic): e for e in (chain.contract.events[n]() for n in EVENT_NAMES)}
        started = time.perf_counter()
        for first, last in ranges:
            for entry in w3.eth.get_logs({**query, "fromBlock": first, "toBlock": last}):  # type: ignore[typeddict-item]
                events[HexBytes(entry["topics"][0])].process_log(entry)
        web3_rate = fetched / (time.perf_counter() - started)

        with tempfile.TemporaryDirectory() as folder:
            index = Indexer(chain, Path(folder) / "index.sqlite", 0, args.batch)
            started = time.perf_counter()
            result = index.sync()
            seconds = time.perf_counter() - started
            index.close()
        assert result.events == fetched, (result.events, fetched)
        rate = result.events / seconds
        print(f"raw eth_getLogs:      {fetched:,} events at {baseline:,.0f} events/s")
        print(f"web3 get_logs+decode: {web3_rate:,.0f} events/s ({web3_rate / baseline:.3f}x)")
        print(
            f"Indexer.sync:         {result.events:,} events in {seconds:.2f} s, "
            f"{rate:,.0f} events/s ({rate / baseline:.3f}x)"
        )
        print(
            f"INDEXER events={result.events} events_per_s={rate:.0f} "
            f"baseline_events_per_s={baseline:.0f} ratio={rate / baseline:.3f}"
        )
    finally:
        terminate(process)


if __name__ == "__main__":
    main()
