"""`marketplace`: the evaluator's and the operator's command line.

marketplace devnet                          # a local chain for several processes
marketplace engines start                   # anvil + an IPFS node in the background
marketplace deploy --rpc URL --keystore K   # the marketplace on any other chain
marketplace blobs push                      # the local store's blobs into IPFS
marketplace key --account 1                 # the X25519 key sponsors seal to
marketplace evaluate --task 1 --account 1   # merges every round, then the payouts
marketplace verify --task 1                 # anyone: does the posted root hold?
marketplace index                           # follow the chain's events into SQLite
marketplace serve                           # the REST API over that index
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from marketplace.cli.common import (
    AccountIndex,
    Contract,
    DataDir,
    Ipfs,
    Keystore,
    Rpc,
    console,
    next_steps,
    options,
    readable_errors,
    signer,
)
from marketplace.dev.devnet import run_devnet
from marketplace.dev.engines import ANVIL_PORT, ENGINES_DIR, IPFS_PORT, Engines
from marketplace.errors import ConfigError
from marketplace.runtime.config import Settings
from marketplace.runtime.devnet_info import DevnetInfo
from marketplace.runtime.state import StateFile

if TYPE_CHECKING:
    from marketplace.service.indexer import Indexer
from marketplace.protocol.tasks import account_key, miner_key, paillier_hex

app = typer.Typer(
    help="Evaluate and verify tasks of the gradient marketplace; run a local chain.",
    no_args_is_help=True,
    add_completion=False,
)

TaskId = Annotated[int, typer.Option("--task", help="The task id.", min=1)]


@app.command()
@readable_errors
def devnet(
    host: Annotated[
        str, typer.Option(help="Interface to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port of the JSON-RPC server (0: any free one).")
    ] = 8545,
    engine: Annotated[
        str, typer.Option(help="tester (embedded eth-tester) or anvil (npm's, if installed).")
    ] = "tester",
    state: Annotated[
        Path | None,
        typer.Option(help="anvil only: keep the chain in this file and resume from it."),
    ] = None,
    data_dir: DataDir = None,
    ipfs: Ipfs = None,
) -> None:
    """Start a local chain with ten funded dev accounts and the marketplace deployed, and write
    its address to DATA_DIR/devnet.json, where every other program finds it (and the IPFS node
    --ipfs names, if any). Ctrl-C stops it."""
    if engine not in ("tester", "anvil"):
        raise ConfigError(f"--engine is tester or anvil, not {engine!r}")
    settings = options(data_dir, None, None, ipfs)

    def announce(info: DevnetInfo) -> None:
        console.print(f"devnet ({info.engine}) at {info.rpc_url}, chain id {info.chain_id}")
        console.print(f"marketplace at {info.contract}; written to {settings.devnet_file}")
        console.print(f"blobs: {info.ipfs_url or settings.blob_dir}")
        console.print("dev accounts (keys are public, for this chain only):")
        for index, account in enumerate(info.accounts):
            console.print(f"  {index}: {account.address}")

    chosen: Literal["tester", "anvil"] = "anvil" if engine == "anvil" else "tester"
    run_devnet(
        settings.data_dir,
        host=host,
        port=port,
        engine=chosen,
        announce=announce,
        ipfs_url=settings.ipfs_url,
        state=state,
    )


engines_app = typer.Typer(
    help="anvil and an IPFS node in the background, bound to 127.0.0.1, their data in a folder.",
    no_args_is_help=True,
)
app.add_typer(engines_app, name="engines")
EnginesFolder = Annotated[
    Path | None,
    typer.Option("--folder", help="Their data, logs and PID files (default: .engines/)."),
]


@engines_app.command("start")
@readable_errors
def engines_start(
    folder: EnginesFolder = None,
    anvil_port: Annotated[int, typer.Option(help="anvil's JSON-RPC port.")] = ANVIL_PORT,
    ipfs_port: Annotated[int, typer.Option(help="The IPFS RPC API's port.")] = IPFS_PORT,
    data_dir: DataDir = None,
) -> None:
    """Start anvil and the IPFS node (those not running), deploy the marketplace unless
    anvil's saved chain holds it, and write DATA_DIR/devnet.json: every program then uses them."""
    settings = options(data_dir, None, None, None)
    engines = Engines(folder or ENGINES_DIR, anvil_port, ipfs_port)
    info = engines.start(settings.data_dir)
    for status in engines.status():
        console.print(status.describe())
    console.print(f"marketplace at {info.contract}; written to {settings.devnet_file}")


@engines_app.command("stop")
@readable_errors
def engines_stop(folder: EnginesFolder = None) -> None:
    """Stop exactly the processes `engines start` began (anvil saves its chain first)."""
    for name, was_running in Engines(folder or ENGINES_DIR).stop():
        console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


@engines_app.command("status")
@readable_errors
def engines_status(folder: EnginesFolder = None) -> None:
    """Whether each engine runs and answers; exit code 3 unless both do."""
    statuses = Engines(folder or ENGINES_DIR).status()
    for status in statuses:
        console.print(status.describe())
    if not all(status.answering for status in statuses):
        raise typer.Exit(3)


@app.command()
@readable_errors
def deploy(
    data_dir: DataDir = None,
    rpc: Rpc = None,
    account: AccountIndex = None,
    keystore: Keystore = None,
    min_window: Annotated[
        int,
        typer.Option(
            help="Shortest round or phase window a task may set, in seconds (lower it only "
            "on a devnet whose clock you move)",
            min=0,
        ),
    ] = 3600,  # chain.PUBLIC_MIN_WINDOW, written out: this module imports web3 only when used
) -> None:
    """Deploy a fresh marketplace from this account on the chain --rpc names (any JSON-RPC
    node); prints its address, for --contract or GM_CONTRACT."""
    from marketplace.chain.client import ChainClient
    from marketplace.runtime.connect import load_account, signing_web3
    from marketplace.runtime.devnet_info import read_devnet_info

    settings = options(data_dir, rpc, None, None, account, keystore)
    deployer = load_account(settings, lambda: typer.prompt("password", hide_input=True))
    rpc_url = settings.rpc_url or read_devnet_info(settings.devnet_file).rpc_url
    web3 = signing_web3(rpc_url, deployer)
    market = ChainClient.deploy(web3, deployer.address, min_window=min_window)
    console.print(f"marketplace deployed at {market.address} on {rpc_url}")
    console.print(
        f"  next: set GM_RPC_URL={rpc_url} and the line below in every program's environment "
        "(or pass --rpc and --contract); then: sponsor task create",
        soft_wrap=True,
    )
    print(f"GM_CONTRACT={market.address}")  # plain: meant to be copied whole


blobs_app = typer.Typer(help="Blobs between the local store and an IPFS node.")
app.add_typer(blobs_app, name="blobs")


@blobs_app.command("push")
@readable_errors
def blobs_push(
    task: Annotated[
        int | None, typer.Option("--task", help="Only the blobs this task points at.", min=1)
    ] = None,
    data_dir: DataDir = None,
    rpc: Rpc = None,
    contract: Contract = None,
    ipfs: Ipfs = None,
) -> None:
    """Copy the blobs of DATA_DIR/blobs (all, or those task TASK points at) into the IPFS
    node, which must give each the CID it has here; the chain's CIDs then resolve on IPFS."""
    from rich.progress import Progress

    from marketplace.runtime.connect import connect, ipfs_url
    from marketplace.storage.push import push, task_cids
    from marketplace.storage.stores import IpfsStore, LocalStore

    settings = options(data_dir, rpc, contract, ipfs)
    url = ipfs_url(settings)
    if not url:
        raise ConfigError("name the IPFS node to push to: --ipfs URL (or GM_IPFS_URL)")
    local = LocalStore(settings.blob_dir)
    if task is None:
        cids = local.cids()
    else:
        chain = connect(settings, None).chain
        cids = task_cids(chain, local, task)
    with IpfsStore(url) as node, Progress(console=console, transient=True) as progress:
        bar = progress.add_task("pushing", total=len(cids))
        pushed = push(local, node, cids, lambda cid, size: progress.advance(bar))
    console.print(f"pushed {pushed.blobs} blobs ({pushed.bytes:,} bytes) to {url}")


@app.command()
@readable_errors
def key(
    task: Annotated[
        int | None, typer.Option("--task", help="Show the per-task key a miner registers.")
    ] = None,
    paillier: Annotated[
        bool,
        typer.Option(
            "--paillier", help="Show the Paillier key that opens secure aggregation sums."
        ),
    ] = False,
    data_dir: DataDir = None,
    account: AccountIndex = None,
    keystore: Keystore = None,
) -> None:
    """Print this account's X25519 public key: evaluators give it to sponsors, who seal the
    validation set and the updates to it (`sponsor task create --evaluator ADDR=KEY`). With
    --paillier, its Paillier n instead (`sponsor task create --aggregate ADDR=N`)."""
    from marketplace.runtime.connect import load_account

    settings = options(data_dir, None, None, None, account, keystore)
    signer_account = load_account(settings, lambda: typer.prompt("password", hide_input=True))
    if paillier:
        print(f"{signer_account.address}={paillier_hex(signer_account)}")
        return
    pair = account_key(signer_account) if task is None else miner_key(signer_account, task)
    print(f"{signer_account.address}={pair.public_hex}")  # plain: meant to be copied whole


@app.command()
@readable_errors
def evaluate(
    task: TaskId,
    once: Annotated[bool, typer.Option(help="Do what is due now, then stop.")] = False,
    poll: Annotated[float | None, typer.Option(help="Seconds between looks at the chain.")] = None,
    data_dir: DataDir = None,
    rpc: Rpc = None,
    contract: Contract = None,
    ipfs: Ipfs = None,
    account: AccountIndex = None,
    keystore: Keystore = None,
) -> None:
    """Evaluate task TASK: post each round's merge when the round closes; after the reveal,
    check and score every node, compute the payouts, upload the report (every leaf with its
    proof) and post its root. Safe to stop and start again at any moment."""
    import time

    from marketplace.roles.evaluator import Evaluator
    from marketplace.runtime.outage import OutageGuard

    settings = options(data_dir, rpc, contract, ipfs, account, keystore)
    connection = signer(settings)
    if connection.address not in connection.chain.evaluators(task):
        raise ConfigError(f"{connection.address} is not an evaluator of task {task}")
    evaluator = Evaluator(
        connection.chain,
        connection.store,
        connection.account,
        _state(settings, connection.address),
        connection.chain_id,
    )
    console.print(f"evaluator {connection.address} on task {task}")
    guard = OutageGuard(settings.outage_seconds, console.print)

    def one_pass() -> bool:
        for line in evaluator.step(task):
            console.print(line)
        return evaluator.finished(task)

    pause = poll or settings.poll_seconds
    if once:  # one pass, however long an outage makes it wait
        guard.retry(one_pass, pause)
    else:
        while not guard.attempt(one_pass):
            time.sleep(pause)
    phase = connection.chain.phase(task)
    console.print(f"task {task}: {phase.name.lower()}")
    if once:
        for step in next_steps(task, connection.chain.task(task), phase):
            console.print(f"  next: {step}", soft_wrap=True)


@app.command()
@readable_errors
def verify(
    task: Annotated[
        int | None, typer.Option("--task", help="The task id (or give --card).", min=1)
    ] = None,
    card: Annotated[
        Path | None,
        typer.Option(help="A model card (model_card.json or MODEL_CARD.md): check every line."),
    ] = None,
    data_dir: DataDir = None,
    rpc: Rpc = None,
    contract: Contract = None,
    ipfs: Ipfs = None,
    account: AccountIndex = None,
    keystore: Keystore = None,
) -> None:
    """Recompute a task's settlement from public data and say whether the posted root holds.

    With --card, first check the model card against the chain: every number of it, the
    Markdown against its JSON twin, and the weights file beside it against the delivered
    digest. With --account/--keystore, also re-score what that account can read: a miner the
    merges, an evaluator every node. Exit code 0 when everything matches, 2 when not."""
    from marketplace.delivered.modeldir import check_card_file
    from marketplace.roles.verify import verify_task
    from marketplace.runtime.connect import connect, load_account

    if (task is None) == (card is None):
        raise ConfigError("give --task N or --card FILE (the card names its task)")
    settings = options(data_dir, rpc, contract, ipfs, account, keystore)
    verifier = None
    if account is not None or keystore is not None:
        verifier = load_account(settings, lambda: typer.prompt("password", hide_input=True))
    connection = connect(settings, verifier)
    card_ok = True
    if card is not None:
        checked, problems = check_card_file(connection.chain, connection.store, card)
        task, card_ok = checked.task_id, not problems
        for problem in problems:
            console.print(f"[red]card:[/] {problem}")
        if card_ok:
            console.print(f"[green]every line of {card} holds against the chain[/]")
    assert task is not None
    pair = None
    if verifier is not None:
        is_evaluator = connection.address in connection.chain.evaluators(task)
        is_sponsor = connection.chain.task(task).sponsor == connection.address
        pair = account_key(verifier) if is_evaluator or is_sponsor else miner_key(verifier, task)
    result = verify_task(
        connection.chain, connection.store, task, connection.chain_id, verifier, pair
    )
    table = Table(title=f"task {task}: verification")
    table.add_column("check")
    table.add_column("holds")
    table.add_column("detail")
    for check in result.checks:
        table.add_row(check.name, "[green]yes[/]" if check.ok else "[red]NO[/]", check.detail)
    console.print(table)
    if not result.ok:
        console.print("[red]the posted settlement does not match[/]")
    else:
        console.print("[green]the posted root matches the recomputed payouts[/]")
    if not (result.ok and card_ok):
        raise typer.Exit(2)


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


@app.command()
@readable_errors
def index(
    once: Annotated[bool, typer.Option(help="Index what is confirmed now, then stop.")] = False,
    confirmations: Confirmations = 2,
    database: IndexFile = None,
    start_block: StartBlock = None,
    poll: Poll = None,
    data_dir: DataDir = None,
    rpc: Rpc = None,
    contract: Contract = None,
    ipfs: Ipfs = None,
) -> None:
    """Follow the marketplace's events into SQLite (and each payout report from IPFS): resumes
    where it stopped, waits for CONFIRMATIONS, undoes reorgs. Safe to stop at any moment."""
    import time

    from marketplace.runtime.outage import OutageGuard

    settings = options(data_dir, rpc, contract, ipfs)
    indexer = _indexer(settings, database, confirmations, start_block)
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
            time.sleep(poll or settings.poll_seconds)
    finally:
        indexer.close()


@app.command()
@readable_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="API worker processes.")] = 1,
    confirmations: Confirmations = 2,
    database: IndexFile = None,
    start_block: StartBlock = None,
    poll: Poll = None,
    data_dir: DataDir = None,
    rpc: Rpc = None,
    contract: Contract = None,
    ipfs: Ipfs = None,
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

    settings = options(data_dir, rpc, contract, ipfs)
    indexer = _indexer(settings, database, confirmations, start_block)
    path = database or settings.index_file
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
            stopping.wait(poll or settings.poll_seconds)

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


def _indexer(
    settings: Settings, database: Path | None, confirmations: int, start_block: int | None
) -> Indexer:
    """The indexer the settings name: its file, its first block (the devnet's deploy block by
    default) and the store payout reports come from."""
    from marketplace.runtime.connect import connect
    from marketplace.runtime.devnet_info import read_devnet_info
    from marketplace.service.indexer import Indexer

    connection = connect(settings, None)
    if start_block is None:
        local = settings.devnet_file.exists() and not (settings.rpc_url and settings.contract)
        start_block = read_devnet_info(settings.devnet_file).deploy_block if local else 0
    path = database or settings.index_file
    return Indexer(
        connection.chain, path, confirmations, start_block=start_block, store=connection.store
    )


def _state(settings: Settings, address: str) -> StateFile:
    return StateFile(settings.state_dir / f"evaluator-{address}.json")


def main() -> None:
    app()


__all__ = ["app", "main"]
