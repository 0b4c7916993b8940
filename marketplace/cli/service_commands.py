"""The operator's service commands: `marketplace index`, `serve` (the REST API over the
index) and `blobs push` (the local store's blobs into IPFS)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marketplace.cli.common import (
    READING,
    ConnectionOptions,
    OptionGroup,
    console,
    option_groups,
    readable_errors,
)
from marketplace.errors import ConfigError
from marketplace.runtime.config import Settings

if TYPE_CHECKING:
    from marketplace.service.indexer import Indexer

blobs_app = typer.Typer(help="Blobs between the local store and an IPFS node.")


@blobs_app.command("push")
@readable_errors
@option_groups(cli=READING)
def blobs_push(
    task: Annotated[
        int | None, typer.Option("--task", help="Only the blobs this task points at.", min=1)
    ] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Copy the blobs of DATA_DIR/blobs (all, or those task TASK points at) into the IPFS
    node, which must give each the CID it has here; the chain's CIDs then resolve on IPFS."""
    from rich.progress import Progress

    from marketplace.runtime.connect import ipfs_url
    from marketplace.service.push import push, task_cids
    from marketplace.storage.stores import IpfsStore, LocalStore

    settings = cli.settings
    url = ipfs_url(settings)
    if not url:
        raise ConfigError("name the IPFS node to push to: --ipfs URL (or GM_IPFS_URL)")
    local = LocalStore(settings.blob_dir)
    if task is None:
        cids = local.cids()
    else:
        chain = cli.reader().chain
        cids = task_cids(chain, local, task)
    with IpfsStore(url) as node, Progress(console=console, transient=True) as progress:
        bar = progress.add_task("pushing", total=len(cids))
        pushed = push(local, node, cids, lambda cid, size: progress.advance(bar))
    console.print(f"pushed {pushed.blobs} blobs ({pushed.bytes:,} bytes) to {url}")


Confirmations = Annotated[
    int, typer.Option(help="Blocks behind the head a block must be to be indexed.", min=0)
]
IndexFile = Annotated[
    Path | None, typer.Option("--index", help="The SQLite file [default: DATA_DIR/index.sqlite].")
]
StartBlock = Annotated[
    int | None, typer.Option(help="The first block (default: the devnet's deploy block, or 0).")
]
Poll = Annotated[float | None, typer.Option(help="Seconds between looks at the chain.")]


@dataclass(frozen=True)
class IndexOptions(OptionGroup):
    """How `index` and `serve` follow the chain into the index."""

    confirmations: Confirmations = 2
    database: IndexFile = None
    start_block: StartBlock = None
    poll: Poll = None

    def indexer(self, settings: Settings) -> Indexer:
        """The indexer these options and the settings name: its file, its first block (the
        devnet's deploy block by default) and the store payout reports come from."""
        from marketplace.runtime.connect import connect
        from marketplace.runtime.devnet_info import read_devnet_info
        from marketplace.service.indexer import Indexer

        connection = connect(settings, None)
        start_block = self.start_block
        if start_block is None:
            local = settings.devnet_file.exists() and not (settings.rpc_url and settings.contract)
            start_block = read_devnet_info(settings.devnet_file).deploy_block if local else 0
        return Indexer(
            connection.chain,
            self.index_file(settings),
            self.confirmations,
            start_block=start_block,
            store=connection.store,
        )

    def index_file(self, settings: Settings) -> Path:
        return self.database or settings.index_file

    def poll_seconds(self, settings: Settings) -> float:
        return self.poll or settings.poll_seconds


@readable_errors
@option_groups(cli=READING)
def index(
    once: Annotated[bool, typer.Option(help="Index what is confirmed now, then stop.")] = False,
    *,
    indexing: IndexOptions,
    cli: ConnectionOptions,
) -> None:
    """Follow the marketplace's events into SQLite (and each payout report from IPFS): resumes
    where it stopped, waits for CONFIRMATIONS, undoes reorgs. Safe to stop at any moment."""
    import time

    from marketplace.runtime.outage import OutageGuard

    settings = cli.settings
    indexer = indexing.indexer(settings)
    guard = OutageGuard(settings.outage_seconds, console.print)
    try:
        while True:
            result = guard.attempt(indexer.sync)
            if result is not None and (result.events or result.unwound or once):
                undone = f", {result.unwound} blocks undone by a reorg" if result.unwound else ""
                console.print(
                    f"indexed to block {result.cursor} (head {result.head}): "
                    f"{result.events} events{undone}"
                )
            if once and result is not None:
                break
            time.sleep(indexing.poll_seconds(settings))
    finally:
        indexer.close()


@readable_errors
@option_groups(cli=READING)
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="API worker processes.")] = 1,
    *,
    indexing: IndexOptions,
    cli: ConnectionOptions,
) -> None:
    """Serve the REST API (/api/v1, docs at /docs) while following the chain into the index."""
    import multiprocessing
    import os
    import threading

    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    from marketplace.chain.client import block_time
    from marketplace.runtime.outage import OutageGuard
    from marketplace.service.api import HEAD_VARIABLE, INDEX_VARIABLE, HeadFile

    settings = cli.settings
    indexer = indexing.indexer(settings)
    path = indexing.index_file(settings)
    head = HeadFile(path.with_name(f"{path.name}.head"))
    guard = OutageGuard(settings.outage_seconds, console.print)
    stopping = threading.Event()

    def follow() -> None:
        w3 = indexer.chain.w3
        while not stopping.is_set():
            seen = None
            try:
                if guard.attempt(indexer.sync) is not None:
                    seen = guard.attempt(lambda: (int(w3.eth.block_number), block_time(w3)))
            except Exception as exc:  # a dead follower would leave the API stale, silently
                console.print(f"[red]the index follower's sync failed:[/] {exc!r}; trying again")
            head.write(seen)
            stopping.wait(indexing.poll_seconds(settings))

    indexer.sync()
    follower = threading.Thread(target=follow, name="index follower", daemon=True)
    follower.start()
    os.environ[INDEX_VARIABLE], os.environ[HEAD_VARIABLE] = str(path), str(head.path)
    # Workers start fresh ("spawn"), not forked from a process whose follower thread is running.
    multiprocessing.set_start_method("spawn", force=True)
    server = Server(
        "marketplace.service.api:app_from_environment",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        log_level=LogLevels.warning,
    )
    console.print(f"serving the API over {path} at http://{host}:{port}/api/v1 (docs: /docs)")
    try:
        # Granian: HTTP in Rust threads, the app in `workers` processes. Its p99 under load is
        # a few times lower than uvicorn's here (README, performance).
        server.serve()
    finally:
        stopping.set()
        follower.join(timeout=10)
        indexer.close()
