"""`make demo`: the whole market on embedded defaults, with real training and real evaluation.

A sponsor posts a task on scikit-learn's bundled digits (10 ETH; the validation file sealed to
the evaluator; a test split nobody in the market ever sees); two data scientists propose
different architectures (a 38 KB MLP and a 1 MB one); four data owners hold label-skewed
shards (Dirichlet alpha, fixed seed). Every round the miners train on the best merge they can
read (round 0: two on each architecture), the evaluator posts the round's merge; then the
sponsor reveals, the evaluator scores every node and posts the payout root, the sponsor
finalizes, everyone claims, the sponsor reclaims the rest.

Every role is the library the CLIs run (`Miner`, `Evaluator`, `marketplace.roles.sponsor`), on one
in-process eth-tester chain and one local blob store; the clock is moved instead of waited on.
`--engines`: the same market on anvil and an IPFS daemon, started for the run (in the run's
folder, on free ports) and stopped after it, every transaction signed here. `--serve PORT`
(with `--engines`): `marketplace serve` follows the run, so the dashboard at
http://127.0.0.1:PORT/ shows the market as it happens, and stays up after it until Ctrl-C.
`--prox-mu MU`: the task spec suggests FedProx's proximal term of weight MU, and every data
owner trains with it (default 0: none). `--dp-epsilon E`: every data owner trains with DP-SGD
and a privacy ledger holding E, spending E / rounds a round; the report shows what each spent
next to its best update's test accuracy.
`--aggregate`: every round is a secure aggregation round (packed Paillier, pairwise masks):
the four data owners join on the latest merge in the round's first half, seal their clipped
deltas in the second, and the evaluator posts the merge it decrypted from the round's sum,
never seeing an update alone (everyone starts on the small architecture: one group a round).
After each round every data owner reveals its own mask key (double masking); `--drop-out`:
miner-4 joins round 1 and never submits, and the other three also reveal their mask keys with
it, so round 1 still merges the three.
The last line is machine-readable:

    DEMO OK accuracy_ratio=<winner/centralized> overhead_per_update_s=<s> wall_s=<s>
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, cast  # noqa: E402

import numpy as np  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.tree import Tree  # noqa: E402
from web3 import Web3  # noqa: E402
from web3.middleware import SignAndSendRawMiddlewareBuilder  # noqa: E402

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient  # noqa: E402
from marketplace.chain.events import Reclaimed, TxResult  # noqa: E402
from marketplace.delivered.modeldir import write_model  # noqa: E402
from marketplace.dev.devchain import local_web3  # noqa: E402
from marketplace.dev.devnet import (  # noqa: E402
    advance_chain_to,
    anvil_keys,
    free_port,
    wait_until_serving,
)
from marketplace.dev.engines import Engines  # noqa: E402
from marketplace.dev.shards import digits_splits, dirichlet_shards, subset  # noqa: E402
from marketplace.protocol.reports import agreed_report, claim_payout  # noqa: E402
from marketplace.protocol.tasks import account_key, paillier_hex  # noqa: E402
from marketplace.roles.evaluator import Evaluator  # noqa: E402
from marketplace.roles.scorer import TaskView  # noqa: E402
from marketplace.roles.sponsor import create_task, propose_architecture, pull_model, reveal  # noqa: E402
from marketplace.rules.datafiles import Dataset, to_csv  # noqa: E402
from marketplace.rules.evaluation import score  # noqa: E402
from marketplace.rules.messages import (  # noqa: E402
    Aggregation,
    DataSchema,
    Metric,
    NodeKind,
    Phase,
    RewardSplit,
    TaskParams,
    TaskSpec,
)
from marketplace.rules.models import ModelSpec, init_weights, mlp  # noqa: E402
from marketplace.runtime.state import StateFile  # noqa: E402
from marketplace.runtime.timing import Stopwatch, Timed  # noqa: E402
from marketplace.storage.stores import BlobStore, IpfsStore, LocalStore  # noqa: E402
from marketplace.wire.report import PayoutReport  # noqa: E402
from miner.config import MinerConfig  # noqa: E402
from miner.ledger import PrivacyLedger, fingerprint  # noqa: E402
from miner.parents import Waiting  # noqa: E402
from miner.submission import Submission  # noqa: E402
from miner.train_config import TrainConfig  # noqa: E402
from miner.trainer import Trainer, TrainResult  # noqa: E402
from miner.worker import Miner  # noqa: E402

IMPORTED = time.perf_counter()
ETHER = 10**18
ROUND_SECONDS = 3600
OWNERS = 4
SMALL_SEED, LARGE_SEED = 1, 2  # the two architectures' initial weights
LARGE_WIDTHS = (64, 2048, 64, 10)  # the 1 MB MLP
console = Console()


def demo_data(seed: int, alpha: float) -> tuple[Dataset, Dataset, list[Dataset]]:
    """(validation, test, the data owners' shards): digits split by `seed`, the training part
    cut into label-skewed shards by Dirichlet(`alpha`). scripts/bench_market.py shares it."""
    train, validation, test = digits_splits(seed=seed)
    shard_rows = dirichlet_shards(train.labels, OWNERS, alpha, seed=seed + 1, min_size=20)
    return validation, test, [subset(train, rows) for rows in shard_rows]


def owner_config(args: argparse.Namespace, owner: int, **more: Any) -> MinerConfig:
    """Data owner `owner`'s (0-based) local training: the demo's epochs and learning rate."""
    return MinerConfig(
        epochs=args.epochs, learning_rate=args.lr, seed=args.seed + 10 * owner, **more
    )


def centralized(
    trainer: Trainer,
    model: ModelSpec,
    model_seed: int,
    shards: list[Dataset],
    args: argparse.Namespace,
) -> TrainResult:
    """The baseline: `model` from its architecture's weights, trained on the union of the
    shards for as many epochs as a data owner trains in the whole market."""
    union = Dataset(
        np.concatenate([s.features for s in shards]),
        np.concatenate([s.labels for s in shards]),
        10,
    )
    config = TrainConfig(
        epochs=args.epochs * args.rounds,
        batch_size=32,
        learning_rate=args.lr,
        optimizer="adam",
        seed=args.seed,
    )
    return trainer.train(model, init_weights(model, model_seed), union, config)


def options() -> argparse.ArgumentParser:
    """The demo's flags and defaults (scripts/bench_market.py reads them too)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=5e-4, help="local learning rate (Adam)")
    parser.add_argument(
        "--prox-mu", type=float, default=0.0, help="FedProx proximal weight in local training"
    )
    parser.add_argument(
        "--start-on",
        choices=("both", "small", "large", "each"),
        default="both",
        help="round 0: two miners per architecture, or all on one; each: every data owner "
        "trains every architecture's lineage, every round",
    )
    parser.add_argument(
        "--merge-weighting",
        choices=("equal", "median"),
        default="equal",
        help="merges weigh updates equally, or by declared samples clipped to the median",
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds, a small second model")
    parser.add_argument(
        "--dp-epsilon",
        type=float,
        help="every data owner trains with DP-SGD: this epsilon in all, a share per round",
    )
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="secure aggregation rounds: the evaluator sees only each round's sum",
    )
    parser.add_argument(
        "--drop-out",
        action="store_true",
        help="with --aggregate: miner-4 joins round 1 and never submits; the round still merges",
    )
    parser.add_argument(
        "--engines", action="store_true", help="on anvil and an IPFS daemon started for the run"
    )
    parser.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="with --engines: the API and dashboard on PORT, live, kept up after the run",
    )
    parser.add_argument("--out", type=Path, default=Path(".market/demo"), help="plot folder")
    return parser


def main() -> None:
    parser = options()
    args = parser.parse_args()
    if args.drop_out and not args.aggregate:
        parser.error("--drop-out is for --aggregate rounds")
    if args.serve is not None and not args.engines:
        parser.error("--serve needs --engines: the service follows the chain over JSON-RPC")
    if args.quick:
        args.rounds = min(args.rounds, 2)
    if args.aggregate:
        args.start_on = "small"  # one group a round: packing the 1 MB model takes 30 s a miner
    with contextlib.ExitStack() as stack:
        run(args, stack)


def _setup(
    engines: bool, folder: Path, stack: contextlib.ExitStack, watch: Stopwatch
) -> tuple[Web3, list[LocalAccount], BlobStore, tuple[str, str] | None]:
    """The chain, its ten funded accounts, the blob store, and the engines' (JSON-RPC, IPFS)
    URLs: embedded (no URLs), or the real engines."""
    if not engines:
        keys = [Account.from_key(i.to_bytes(32, "big")) for i in range(1, 11)]
        return local_web3(), keys, LocalStore(folder / "blobs"), None
    with watch.measure("engines"):  # the start-up; stopping them comes after the figures
        running = Engines(folder / "engines", free_port(), free_port())
        stack.callback(running.stop)
        info = running.start(folder / "devnet")
    keys = [Account.from_key(key) for key in anvil_keys()]
    w3 = Web3(Web3.HTTPProvider(info.rpc_url, request_kwargs={"timeout": 60}))
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(keys), layer=0)
    store = IpfsStore(running.ipfs.url)
    stack.callback(store.close)
    return w3, keys, store, (info.rpc_url, running.ipfs.url)


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


@dataclass
class Rounds:
    """What the rounds left: the miners, their labels and ledgers, every submission."""

    miners: list[Miner]
    labels: list[str]
    ledgers: list[PrivacyLedger | None]
    submissions: list[Submission]


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    market = _open_market(args, stack)
    validation, test, shards = _private_data(args, market.folder)
    task_id, params = _post_task(args, market, validation, test)
    small, large, arch_ids = _propose_architectures(args, market, task_id)
    trainer = Trainer()
    rounds = _make_miners(args, market, arch_ids, trainer)
    evaluator = Evaluator(
        market.chain,
        market.store,
        market.evaluator,
        StateFile(market.folder / "state" / "evaluator.json"),
        market.chain_id,
        market.watch,
    )
    _run_rounds(args, market, task_id, rounds, evaluator)
    report, reclaimed = _settle(market, task_id, params, evaluator)
    # The sponsor pulls the model it paid for, checked, with its card (and the test split's
    # score, which only the sponsor can give).
    pulled = pull_model(
        market.chain, market.store, market.sponsor, market.chain_id, task_id, test=to_csv(test)
    )
    card_path = write_model(args.out / "model", pulled)
    gas = _gas_by_role(market.w3, market.names)

    # ------------------------------------------------------------- the untouched test split
    winner = report.winner
    assert winner is not None
    assert pulled.card.test is not None and pulled.card.model.winner == winner
    winner_correct = pulled.card.test.score
    started = time.perf_counter()
    seed = SMALL_SEED if _arch_of(report, winner) == arch_ids[0] else LARGE_SEED
    central = centralized(trainer, pulled.spec, seed, shards, args)
    central_seconds = time.perf_counter() - started
    central_correct = score(pulled.spec, central.weights, test, Metric.ACCURACY)
    ratio = winner_correct / central_correct
    view = evaluator.view(task_id)
    bought = _what_privacy_bought(args, market, report, view, (test, shards), rounds.ledgers)

    # ------------------------------------------------------------- the report
    _print_tree(report, market.names, arch_ids)
    _print_privacy(bought, args.dp_epsilon, args.aggregate)
    _print_payouts(report, market.names, market.chain, reclaimed.events)
    _print_gas(gas)
    console.print(
        f"winner: node {winner} ({_kind(report, winner)}), test accuracy "
        f"{winner_correct / len(test):.4f}; centralized on the union "
        f"({args.epochs * args.rounds} epochs): {central_correct / len(test):.4f}; "
        f"ratio {ratio:.4f}"
    )
    overhead = _print_overhead(report, rounds.submissions, evaluator, arch_ids, (small, large))
    training = sum(s.seconds.get("train", 0.0) for s in rounds.submissions) + central_seconds
    wall = time.perf_counter() - STARTED
    _print_wall_time(market.watch, training, wall)
    setup = "anvil + IPFS daemon" if args.engines else "eth-tester + local store"
    console.print(f"setup: {setup}")
    plot = _plot(report, args.out)
    console.print(f"score progression plotted to {plot}")
    console.print(f"the sponsor's model and its card: {card_path}", soft_wrap=True)
    hint = f"  use it: sponsor model predict --model {card_path.parent} --data FILE"
    console.print(hint, soft_wrap=True)
    figures = f"accuracy_ratio={ratio:.4f} overhead_per_update_s={overhead:.3f} wall_s={wall:.1f}"
    print(f"DEMO OK {figures}", flush=True)
    if market.service is not None:
        _keep_serving(market.service, args.serve)


def _open_market(args: argparse.Namespace, stack: contextlib.ExitStack) -> DemoMarket:
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


def _private_data(args: argparse.Namespace, folder: Path) -> tuple[Dataset, Dataset, list[Dataset]]:
    """(validation, test, shards): each data owner's shard written to its own CSV under
    `folder`/private (it never leaves); the market's title and the shards said."""
    validation, test, shards = demo_data(args.seed, args.alpha)
    private = folder / "private"
    private.mkdir()
    for i, shard in enumerate(shards):
        (private / f"miner-{i + 1}.csv").write_bytes(to_csv(shard))
    console.rule("[bold]Gradient marketplace: digits, four data owners, one evaluator")
    console.print(
        f"shards (alpha {args.alpha}): "
        + ", ".join(f"miner-{i + 1} {len(s)} rows {_classes(s)}" for i, s in enumerate(shards))
    )
    return validation, test, shards


def _post_task(
    args: argparse.Namespace, market: DemoMarket, validation: Dataset, test: Dataset
) -> tuple[int, TaskParams]:
    """The sponsor's task on digits: 10 ETH, the validation file sealed to the evaluator."""
    spec = TaskSpec(
        name="digits",
        description="8x8 handwritten digits, 64 pixel columns and a label",
        metric=Metric.ACCURACY,
        data=DataSchema(num_features=64, num_classes=10),
        split=RewardSplit(expertise_bps=2000, data_bps=5000, compute_bps=2000),
        max_blob_bytes=8 * 1024 * 1024,
        merge_weighting=args.merge_weighting,
        aggregation=Aggregation(
            key_holder=market.evaluator.address,
            paillier_n=paillier_hex(market.evaluator),
            clip=0.05,
            max_miners=8,
        )
        if args.aggregate
        else None,
        prox_mu=args.prox_mu,  # the miners follow the spec's suggestion
    )
    params = TaskParams(
        bounty=10 * ETHER,
        deposit=ETHER // 100,
        validation_commit=bytes(32),
        round_duration=ROUND_SECONDS,
        rounds=args.rounds,
        reveal_window=ROUND_SECONDS,
        evaluation_window=ROUND_SECONDS,
        challenge_window=600,
        claim_window=7 * 86_400,
        evaluators=(market.evaluator.address,),
    )
    created = create_task(
        market.chain,
        market.store,
        market.sponsor,
        market.chain_id,
        to_csv(validation),
        spec,
        params,
        [account_key(market.evaluator).public_hex],
    )
    console.print(
        f"task #{created.task_id}: 10 ETH, {args.rounds} rounds, validation set of "
        f"{len(validation)} rows committed and sealed to the evaluator; {len(test)} test rows "
        "kept out"
    )
    return created.task_id, params


def _propose_architectures(
    args: argparse.Namespace, market: DemoMarket, task_id: int
) -> tuple[ModelSpec, ModelSpec, list[int]]:
    """(small, large, their node ids): the two data scientists' architectures."""
    small = mlp(64, 128, 10)
    large = mlp(64, 64, 10) if args.quick else mlp(*LARGE_WIDTHS)
    arch_ids = []
    for scientist, model, seed in (
        (market.scientists[0], small, SMALL_SEED),
        (market.scientists[1], large, LARGE_SEED),
    ):
        result = propose_architecture(
            market.chain, market.store, scientist, task_id, model, init_weights(model, seed)
        )
        assert result.value is not None
        arch_ids.append(result.value)
    console.print(f"architectures: {arch_ids[0]} = 64-128-10, {arch_ids[1]} = {_widths(large)}")
    return small, large, arch_ids


def _make_miners(
    args: argparse.Namespace, market: DemoMarket, arch_ids: list[int], trainer: Trainer
) -> Rounds:
    """One miner per data owner (per lineage with `--start-on each`), none submitted yet."""
    # Each data owner's ledger holds exactly its budget: one more round would be refused.
    per_round = None if args.dp_epsilon is None else args.dp_epsilon / args.rounds
    state = market.folder / "state"
    ledgers = [
        PrivacyLedger(state / f"privacy-{i + 1}.json", args.dp_epsilon)
        if args.dp_epsilon is not None
        else None
        for i in range(len(market.owners))
    ]
    lineages: list[int | None] = [*arch_ids] if args.start_on == "each" else [None]
    owners = [(i, lineage) for i in range(len(market.owners)) for lineage in lineages]
    miners = [
        Miner(
            market.chain,
            market.store,
            market.owners[i],
            trainer,
            _private_file(market.folder, i),
            StateFile(state / f"{_label(i, lineage)}.json".replace("/", "-")),
            market.chain_id,
            owner_config(
                args,
                i,
                dp_epsilon=per_round,
                architecture=lineage or _first_architecture(args.start_on, arch_ids, i),
                lineage=lineage,
            ),
            watch=market.watch,
            ledger=ledgers[i],
        )
        for i, lineage in owners
    ]
    return Rounds(miners, [_label(i, lineage) for i, lineage in owners], ledgers, [])


def _run_rounds(
    args: argparse.Namespace,
    market: DemoMarket,
    task_id: int,
    rounds: Rounds,
    evaluator: Evaluator,
) -> None:
    """Every round: the miners submit (joining first in secure aggregation rounds), the
    clock moves to the round's end, mask seeds are revealed, the evaluator posts the merge;
    the submissions are added to `rounds`."""
    schedule = market.chain.task(task_id).schedule
    for round_index in range(args.rounds):
        if args.aggregate:  # the first half: join and train; the masked set is fixed midway
            for miner in rounds.miners:
                assert submit_after_merge_wait(market.w3, miner, task_id) is None
            advance_chain_to(market.w3, schedule.midpoint(round_index))
        for i, miner in enumerate(rounds.miners):
            if args.drop_out and round_index == 1 and i == len(rounds.miners) - 1:
                console.print(f"round 1: {rounds.labels[i]} joined and trained, and drops out now")
                continue
            submission = submit_after_merge_wait(market.w3, miner, task_id)
            assert isinstance(submission, Submission)
            rounds.submissions.append(submission)
        advance_chain_to(market.w3, schedule.closes(round_index))
        for i, miner in enumerate(rounds.miners):  # secure aggregation: unmask the round's sum
            for line in miner.secure.reveal_masks(task_id):
                console.print(f"  [magenta]{rounds.labels[i]}[/] {line}")
        for line in evaluator.step(task_id):
            console.print(f"  [cyan]evaluator[/] {line}")
        kept = [s for s in rounds.submissions if s.round == round_index]
        console.print(
            f"round {round_index}: "
            + ", ".join(
                f"{rounds.labels[i]} -> node {s.node_id} on {s.parent}" for i, s in enumerate(kept)
            )
        )


def _settle(
    market: DemoMarket, task_id: int, params: TaskParams, evaluator: Evaluator
) -> tuple[PayoutReport, TxResult]:
    """Reveal, score and post the payout root, finalize after the challenge window, claim
    every payout and reclaim the rest: (the agreed report, the reclaim)."""
    chain = market.chain
    assert chain.phase(task_id) is Phase.REVEAL
    reveal(chain, market.store, market.sponsor, market.chain_id, task_id)
    for line in evaluator.step(task_id):
        console.print(f"  [cyan]evaluator[/] {line}")
    report = agreed_report(chain, market.store, task_id)
    advance_chain_to(market.w3, chain.task(task_id).agreed_at + params.challenge_window)
    chain.finalize(market.sponsor.address, task_id)
    for account in [*market.scientists, *market.owners]:
        entry, claimed = claim_payout(chain, market.store, account.address, task_id)
        assert entry is None or claimed
    reclaimed = chain.reclaim(market.sponsor.address, task_id)
    assert chain.phase(task_id) is Phase.CLAIMS
    return report, reclaimed


def _gas_by_role(w3: Web3, names: dict[str, str]) -> dict[str, int]:
    """Gas every role's transactions used, read back from the chain's blocks."""
    gas: dict[str, int] = defaultdict(int)
    for block in range(1, int(w3.eth.block_number) + 1):
        for tx in w3.eth.get_block(block, full_transactions=True)["transactions"]:
            sender = cast(dict[str, Any], tx)["from"]
            if sender in names:
                receipt = w3.eth.get_transaction_receipt(cast(dict[str, Any], tx)["hash"])
                gas[names[sender].split("-")[0]] += int(receipt["gasUsed"])
    return gas


def _what_privacy_bought(
    args: argparse.Namespace,
    market: DemoMarket,
    report: PayoutReport,
    view: TaskView,
    data: tuple[Dataset, list[Dataset]],
    ledgers: list[PrivacyLedger | None],
) -> list[tuple[str, int, float | None, int | None, float | None]]:
    """(owner, rows, epsilon spent, best valid node, its test accuracy) for each data owner:
    its best update, or with `--aggregate` the best merge its updates went into."""
    test, shards = data
    bought = []
    for i, account in enumerate(market.owners):
        own = [n for n in report.nodes if n.author == account.address and n.kind is NodeKind.UPDATE]
        if args.aggregate:  # nobody saw an update alone: what it bought is the merges it joined
            ids = {n.node_id for n in own if n.valid}
            own = [n for n in report.nodes if n.kind is NodeKind.MERGE and ids & set(n.parents)]
        best = max((n for n in own if n.valid), key=lambda n: (n.score, -n.node_id), default=None)
        accuracy = None
        if best is not None and (weights := view.verdicts[best.node_id].weights) is not None:
            model = view.architectures[_arch_of(report, best.node_id)]
            accuracy = score(model, weights, test, Metric.ACCURACY) / len(test)
        ledger = ledgers[i]
        private = _private_file(market.folder, i)
        spent = None if ledger is None else ledger.spent(fingerprint(private)).epsilon
        best_id = None if best is None else best.node_id
        bought.append((f"miner-{i + 1}", len(shards[i]), spent, best_id, accuracy))
    return bought


def _print_gas(gas: dict[str, int]) -> None:
    table = Table(title="gas spent per role")
    table.add_column("role")
    table.add_column("gas", justify="right")
    for role, used in sorted(gas.items()):
        table.add_row(role, f"{used:,}")
    console.print(table)


def _print_overhead(
    report: PayoutReport,
    submissions: list[Submission],
    evaluator: Evaluator,
    arch_ids: list[int],
    models: tuple[ModelSpec, ModelSpec],
) -> float:
    """Say the market's overhead per update: everything but training and scoring, for the
    1 MB model (the small one if no update was on it); the median, in seconds."""
    small, large = models
    steps = ("download", "seal", "upload", "submit", "evaluator check")
    large_updates = [s for s in submissions if _arch_of(report, s.node_id) == arch_ids[1]]
    measured = large_updates or submissions
    shown_model = large if large_updates else small
    per_step = {
        step: statistics.median(
            evaluator.check_seconds.get(s.node_id, 0.0)
            if step == "evaluator check"
            else s.seconds.get(step, 0.0)
            for s in measured
        )
        for step in steps
    }
    overhead = statistics.median(
        sum(v for k, v in s.seconds.items() if k != "train")
        + evaluator.check_seconds.get(s.node_id, 0.0)
        for s in measured
    )
    train_median = statistics.median(s.seconds["train"] for s in measured)
    console.print(
        f"market overhead per update ({_widths(shown_model)}, "
        f"{_param_bytes(shown_model) / 1e6:.2f} MB, "
        f"median of {len(measured)}): {overhead:.3f} s next to {train_median:.3f} s of "
        "training; " + ", ".join(f"{step} {seconds:.3f} s" for step, seconds in per_step.items())
    )
    return overhead


def _print_wall_time(watch: Stopwatch, training: float, wall: float) -> None:
    """Where the run's wall time went (`training`: the miners' and the baseline's)."""
    parts = {
        "process start-up (imports)": IMPORTED - STARTED,
        "starting anvil and the IPFS daemon": watch.total("engines"),
        "training (miners + centralized baseline)": training,
        "scoring": watch.total("scoring"),
        "chain (transactions, receipts, reads)": watch.total("chain"),
        "storage (put/get)": watch.total("storage"),
    }
    parts["other (envelopes, checks, data, report)"] = wall - sum(parts.values())
    split = Table(title=f"wall time {wall:.1f} s")
    split.add_column("part")
    split.add_column("seconds", justify="right")
    for part, seconds in parts.items():
        if seconds or part != "starting anvil and the IPFS daemon":
            split.add_row(part, f"{seconds:.2f}")
    console.print(split)


def _keep_serving(service: subprocess.Popen[bytes], port: int) -> None:
    console.print(f"the dashboard stays up at http://127.0.0.1:{port}/: Ctrl-C stops it")
    # Ctrl-C (or SIGTERM) stops it even when started from a script that ignores SIGINT, as
    # a shell does for its background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        service.wait()


def _private_file(folder: Path, owner: int) -> Path:
    """Data owner `owner`'s (0-based) shard, on its own machine."""
    return folder / "private" / f"miner-{owner + 1}.csv"


# ------------------------------------------------------------------ helpers


def submit_after_merge_wait(w3: Web3, miner: Miner, task_id: int) -> Submission | None:
    """`submit_round`, the clock moved to the end of the merge window while the miner waits
    for the previous round's merge (only when no merge of it was posted: no update kept)."""
    result = miner.submit_round(task_id)
    while isinstance(result, Waiting):
        console.print(f"  {result}: none was posted")
        advance_chain_to(w3, result.until)
        result = miner.submit_round(task_id)
    return result


def _label(owner: int, lineage: int | None) -> str:
    """The data owner's name (0-based `owner`), with the lineage its miner trains if any."""
    return f"miner-{owner + 1}" + ("" if lineage is None else f"/{lineage}")


def _first_architecture(start_on: str, arch_ids: list[int], miner: int) -> int:
    if start_on == "both":
        return arch_ids[miner // 2]
    return arch_ids[0] if start_on == "small" else arch_ids[1]


def _classes(shard: Dataset) -> str:
    counts = np.bincount(shard.labels.astype(np.int64), minlength=10)
    return "[" + " ".join(str(int(c)) for c in counts) + "]"


def _widths(model: ModelSpec) -> str:
    linear = [layer for layer in model.layers if layer.type == "linear"]
    return "-".join([str(linear[0].in_features), *(str(layer.out_features) for layer in linear)])  # type: ignore[union-attr]


def _param_bytes(model: ModelSpec) -> int:
    from marketplace.rules.models import parameter_count

    return 4 * parameter_count(model)


def _arch_of(report: PayoutReport, node_id: int) -> int:
    nodes = {n.node_id: n for n in report.nodes}
    node = nodes[node_id]
    while node.kind is not NodeKind.ARCHITECTURE:
        node = nodes[min(node.parents)]
    return node.node_id


def _kind(report: PayoutReport, node_id: int) -> str:
    return next(n.kind.name.lower() for n in report.nodes if n.node_id == node_id)


def _print_tree(report: PayoutReport, names: dict[str, str], arch_ids: list[int]) -> None:
    nodes = {n.node_id: n for n in report.nodes}
    children: dict[int, list[int]] = defaultdict(list)
    for node in report.nodes:
        for parent in node.parents:
            children[parent].append(node.node_id)
    tree = Tree(f"task {report.task_id} (validation: {report.validation_digest[:12]}...)")

    def label(node_id: int) -> str:
        n = nodes[node_id]
        who = names.get(n.author, n.author[:10])
        mark = " [bold green]<- winner[/]" if node_id == report.winner else ""
        if n.kind is NodeKind.MERGE:
            who += f" of {list(n.parents)}"
        status = f"score {n.score}, gain {n.gain}" if n.valid else f"[red]invalid: {n.reason}[/]"
        return f"{node_id} {n.kind.name.lower()} by {who}: {status}{mark}"

    shown: set[int] = set()

    def add(branch: Tree, node_id: int) -> None:
        if node_id in shown:
            branch.add(f"{node_id} (above)")
            return
        shown.add(node_id)
        sub = branch.add(label(node_id))
        for child in sorted(children.get(node_id, [])):
            if nodes[child].kind is NodeKind.MERGE and min(nodes[child].parents) != node_id:
                continue  # a merge hangs under its first parent; the others are listed on it
            add(sub, child)

    for arch in arch_ids:
        add(tree, arch)
    console.print(tree)


def _print_privacy(
    bought: list[tuple[str, int, float | None, int | None, float | None]],
    dp_epsilon: float | None,
    aggregate: bool,
) -> None:
    bought_by = "the best merge its sealed updates went into" if aggregate else "its best update"
    title = f"privacy: what each data owner spent, and what {bought_by} bought"
    table = Table(title=title if dp_epsilon else f"{title} (no DP: --dp-epsilon E)")
    for column in ("owner", "rows", "epsilon spent", "best node", "its test accuracy"):
        table.add_column(column, justify="left" if column == "owner" else "right")
    for owner, rows, spent, best, accuracy in bought:
        shown = "no DP" if spent is None else f"{spent:.3f}"
        quality = "-" if accuracy is None else f"{accuracy:.4f}"
        table.add_row(owner, str(rows), shown, "none valid" if best is None else str(best), quality)
    console.print(table)


def _print_payouts(
    report: PayoutReport, names: dict[str, str], chain: ChainClient, reclaim_events: Any
) -> None:
    table = Table(title="who earned what (ETH) and why")
    for column in ("account", "expertise", "data", "compute", "deposits", "total", "reputation"):
        table.add_column(column, justify="left" if column == "account" else "right")
    for entry in report.payouts:
        table.add_row(
            names.get(entry.account, entry.account),
            *(f"{value / ETHER:.4f}" for value in (entry.expertise, entry.data, entry.compute)),
            f"{entry.deposits / ETHER:.2f}",
            f"{entry.amount / ETHER:.4f}",
            f"{chain.reputation(entry.account):,}",
        )
    console.print(table)
    back = sum(e.amount for e in reclaim_events if isinstance(e, Reclaimed))
    console.print(f"the sponsor reclaimed {back / ETHER:.4f} ETH that nobody earned")


def _plot(report: PayoutReport, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path = out / "scores.png"
    figure, axes = plt.subplots(figsize=(7, 4))
    by_kind: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for node in report.nodes:
        if node.valid:
            xs, ys = by_kind[node.kind.name.lower()]
            xs.append(node.node_id)
            ys.append(node.score)
    for kind, marker in (("architecture", "s"), ("update", "o"), ("merge", "*")):
        if kind in by_kind:
            axes.scatter(*by_kind[kind], label=kind, marker=marker, s=80 if kind == "merge" else 30)
    axes.set_xlabel("node id (submission order)")
    axes.set_ylabel("validation rows right")
    axes.set_title("scores of the model tree")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
