"""`make bench-scale`: what the market costs as a task's tree grows, next to its first round.

On digits with the demo's small architecture (64-128-10) and real training (1 local epoch of
Adam at 5e-3 on Dirichlet(0.5) shards: cheap, and not what is measured, but enough for every
round to merge), three tasks, each on a fresh contract of one chain:

- the rounds curve: 4 miners for 40 rounds. Per round: the market overhead per update (the
  median over the round's updates of download, seal, upload, submit and the evaluator's check
  of it: what the demo reports, everything but training and scoring), the chain time of the
  round (every call of every role on the `ChainClient`: transactions, receipts, reads) and the
  evaluator's step (check, merge, post); printed for rounds 1, 5, 10, 20 and 40 with each
  figure's ratio to round 1's;
- settlement: a task of 100 updates (10 miners x 10 rounds) and one of 1,000 (25 miners x 40
  rounds). After the reveal: the settle of the evaluator that ran the rounds (warm: evaluate,
  upload the report, post its root), `evaluate` by a fresh `Evaluator` on a fresh client (cold,
  as after a restart; it must reach the same root), and `verify_task` (`marketplace verify`)
  in public and with a miner's key (which re-scores the merges), each next to round 1's
  evaluator step and per update.

`--engine tester|anvil|both`: eth-tester in-process with the local store, or anvil and an IPFS
daemon started for the run (as `demo.py --engines`); `--quick`: a smoke test of fewer rounds
and updates. The last line is machine-readable:

    BENCH-SCALE <engine>.<figure>=<seconds>/<ratio to round 1> ...
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TypeVar, cast  # noqa: E402

import demo  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from web3 import Web3  # noqa: E402
from web3.middleware import SignAndSendRawMiddlewareBuilder  # noqa: E402
from web3.types import RPCEndpoint  # noqa: E402

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient  # noqa: E402
from marketplace.dev.devchain import local_web3, tester_of  # noqa: E402
from marketplace.dev.devnet import advance_chain_to, anvil_keys, free_port  # noqa: E402
from marketplace.dev.engines import Engines  # noqa: E402
from marketplace.dev.shards import digits_splits, dirichlet_shards, subset  # noqa: E402
from marketplace.protocol.tasks import account_key, miner_key  # noqa: E402
from marketplace.roles.evaluator import Evaluator  # noqa: E402
from marketplace.roles.sponsor import create_task, propose_architecture, reveal  # noqa: E402
from marketplace.roles.verify import verify_task  # noqa: E402
from marketplace.rules.datafiles import Dataset, to_csv  # noqa: E402
from marketplace.rules.messages import DataSchema, Metric, Phase, RewardSplit, TaskParams, TaskSpec  # noqa: E402
from marketplace.rules.models import init_weights, mlp  # noqa: E402
from marketplace.runtime.state import StateFile  # noqa: E402
from marketplace.runtime.timing import Stopwatch, Timed  # noqa: E402
from marketplace.storage.stores import BlobStore, IpfsStore, LocalStore  # noqa: E402
from miner.config import MinerConfig  # noqa: E402
from miner.submission import Submission  # noqa: E402
from miner.trainer import Trainer  # noqa: E402
from miner.worker import Miner  # noqa: E402

ETHER = 10**18
ROUND_SECONDS = 3600
SHOWN_ROUNDS = (1, 5, 10, 20, 40)  # 1-based, as the issue counts them
ROLES = 4  # deployer, sponsor, evaluator, scientist; the miners' accounts follow
LEARNING_RATE = 5e-3  # one local epoch on 40-300 rows: enough for the rounds to merge
EXTRA_BALANCE = 1_000 * ETHER  # each account past the node's ten funded ones
T = TypeVar("T")
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True)
class Shape:
    """One task of the bench: `miners` data owners for `rounds` rounds."""

    name: str
    miners: int
    rounds: int

    @property
    def updates(self) -> int:
        return self.miners * self.rounds


CURVE = Shape("rounds curve", 4, 40)
SETTLED = (Shape("100 updates", 10, 10), Shape("1,000 updates", 25, 40))
QUICK_CURVE = Shape("rounds curve", 4, 5)
QUICK_SETTLED = (Shape("12 updates", 4, 3), Shape("24 updates", 6, 4))


@dataclass(frozen=True)
class RoundCost:
    round: int  # 1-based
    updates: int
    overhead_s: float  # median over the round's updates: download, seal, upload, submit, check
    chain_s: float  # every ChainClient call of every role during the round
    evaluator_s: float  # the evaluator's step after the round: check, merge, post
    wall_s: float


@dataclass(frozen=True)
class SettlementCost:
    updates: int
    nodes: int
    warm_s: float  # the rounds' evaluator: evaluate, upload the report, post the root
    cold_s: float  # a fresh Evaluator on a fresh client: evaluate
    verify_public_s: float  # verify_task without a key
    verify_miner_s: float  # verify_task with a miner's key: the merges re-scored too
    scorings: int  # models the warm settle ran on the revealed set
    cold_scorings: int


@dataclass
class TaskRun:
    engine: str
    shape: Shape
    rounds: list[RoundCost] = field(default_factory=list)
    settlement: SettlementCost | None = None
    wall_s: float = 0.0
    profiles: dict[str, str] = field(default_factory=dict)  # settlement stage -> top lines


@dataclass(frozen=True)
class Env:
    """One engine's chain, funded accounts and blob store (shared by the engine's tasks)."""

    name: str
    w3: Web3
    keys: list[LocalAccount]
    blobs: BlobStore
    folder: Path


def environment(engine: str, accounts: int, folder: Path, stack: contextlib.ExitStack) -> Env:
    """eth-tester and a local store, or anvil and an IPFS daemon started for the run (as
    `demo.py --engines`); `accounts` funded accounts, signed for here."""
    if engine == "tester":
        w3 = local_web3()
        keys = [Account.from_key(i.to_bytes(32, "big")) for i in range(1, accounts + 1)]
        for key in keys[10:]:  # eth-tester funds ten: the others get theirs from the last one
            tester_of(w3).add_account("0x" + bytes(key.key).hex())
            w3.eth.send_transaction(
                {"from": keys[9].address, "to": key.address, "value": EXTRA_BALANCE}
            )
        return Env(engine, w3, keys, LocalStore(folder / "blobs"), folder)
    running = Engines(folder / "engines", free_port(), free_port())
    stack.callback(running.stop)
    info = running.start(folder / "devnet")
    keys = [Account.from_key(key) for key in anvil_keys(accounts)]
    w3 = Web3(Web3.HTTPProvider(info.rpc_url, request_kwargs={"timeout": 120}))
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(keys), layer=0)
    for key in keys[10:]:  # anvil funds ten
        w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [key.address, hex(EXTRA_BALANCE)])
    store = IpfsStore(running.ipfs.url)
    stack.callback(store.close)
    return Env(engine, w3, keys, store, folder)


@dataclass(frozen=True)
class BenchTask:
    """One shape's task on a fresh contract, as its steps share it."""

    raw: ChainClient  # the client without timing, for fresh clients of the same contract
    deployed: int  # the deployment block: where a restarted program starts reading events
    chain: ChainClient  # timed into `watch`, as the store
    store: BlobStore
    watch: Stopwatch
    chain_id: int
    task_id: int
    state: Path  # the task's state files


@dataclass
class Stages:
    """Runs the settlement's stages timed (and with `profile`, under cProfile, its top lines
    kept in the run's `profiles`), saying each through `tick`."""

    run: TaskRun
    tick: Callable[[str], None]
    profile: bool

    def __call__(self, name: str, work: Callable[[], T]) -> tuple[float, T]:
        if not self.profile:
            seconds, result = timed(work)
        else:
            seconds, (result, self.run.profiles[name]) = timed(lambda: profiled(work))
        self.tick(f"{self.run.engine}, {self.run.shape.name}: {name} {seconds:.1f} s")
        return seconds, result


def run_task(
    env: Env,
    shape: Shape,
    seed: int,
    tick: Callable[[str], None],
    profile: bool = False,
    lr: float = LEARNING_RATE,
) -> TaskRun:
    """`shape` on a fresh contract: its rounds (with their costs), the reveal, the settlement
    (each stage under cProfile with `profile`: its top lines kept in `profiles`)."""
    started = time.perf_counter()
    run = TaskRun(env.name, shape)
    train, validation, _ = digits_splits(seed=seed)
    task = post_task(env, shape, to_csv(validation))
    miners = make_miners(env, task, shape, seed, lr, train)
    _, sponsor, evaluator_account, _ = env.keys[:ROLES]
    state = StateFile(task.state / "evaluator.json")
    evaluator = Evaluator(task.chain, task.store, evaluator_account, state, task.chain_id)
    run.rounds = run_rounds(env, task, shape, miners, evaluator, tick)
    assert task.chain.phase(task.task_id) is Phase.REVEAL
    reveal(task.chain, task.store, sponsor, task.chain_id, task.task_id)
    run.settlement = settle_and_verify(env, task, shape, evaluator, Stages(run, tick, profile))
    run.wall_s = time.perf_counter() - started
    return run


def post_task(env: Env, shape: Shape, validation_csv: bytes) -> BenchTask:
    """A fresh contract with the bench's digits task on it and the demo's small architecture."""
    watch = Stopwatch()  # the bench's: every call through the timed client and store
    deployer, sponsor, evaluator_account, scientist = env.keys[:ROLES]
    raw = ChainClient.deploy(env.w3, deployer.address, min_window=DEV_MIN_WINDOW)
    deployed = int(env.w3.eth.block_number)  # where a restarted program starts reading events
    chain = cast(ChainClient, Timed(raw, watch, "chain"))
    store = cast(BlobStore, Timed(env.blobs, watch, "storage"))
    chain_id = int(env.w3.eth.chain_id)
    spec = TaskSpec(
        name="digits",
        description="8x8 handwritten digits: the bench's task",
        metric=Metric.ACCURACY,
        data=DataSchema(num_features=64, num_classes=10),
        split=RewardSplit(expertise_bps=2000, data_bps=5000, compute_bps=2000),
        max_blob_bytes=8 * 1024 * 1024,
    )
    params = TaskParams(
        bounty=10 * ETHER,
        deposit=ETHER // 100,
        validation_commit=bytes(32),
        round_duration=ROUND_SECONDS,
        rounds=shape.rounds,
        reveal_window=ROUND_SECONDS,
        evaluation_window=ROUND_SECONDS,
        challenge_window=600,
        claim_window=7 * 86_400,
        evaluators=(evaluator_account.address,),
    )
    evaluator_public = [account_key(evaluator_account).public_hex]
    task_id = create_task(
        chain, store, sponsor, chain_id, validation_csv, spec, params, evaluator_public
    ).task_id
    model = mlp(64, 128, 10)  # the demo's small architecture
    propose_architecture(chain, store, scientist, task_id, model, init_weights(model, 1))
    state = env.folder / f"task-{raw.address[2:10]}"
    return BenchTask(raw, deployed, chain, store, watch, chain_id, task_id, state)


def make_miners(
    env: Env, task: BenchTask, shape: Shape, seed: int, lr: float, train: Dataset
) -> list[Miner]:
    """`shape.miners` data owners on label-skewed shards of `train`, one local epoch a round."""
    shards = dirichlet_shards(train.labels, shape.miners, 0.5, seed=seed + 1, min_size=20)
    trainer = Trainer()
    return [
        Miner(
            task.chain,
            task.store,
            account,
            trainer,
            subset(train, rows),
            StateFile(task.state / f"miner-{i + 1}.json"),
            task.chain_id,
            MinerConfig(epochs=1, learning_rate=lr, seed=seed + 10 * i),
        )
        for i, (account, rows) in enumerate(
            zip(env.keys[ROLES : ROLES + shape.miners], shards, strict=True)
        )
    ]


def run_rounds(
    env: Env,
    task: BenchTask,
    shape: Shape,
    miners: list[Miner],
    evaluator: Evaluator,
    tick: Callable[[str], None],
) -> list[RoundCost]:
    """Every round: each miner submits, the clock moves to the round's end, the evaluator
    steps; what each round cost."""
    schedule = task.chain.task(task.task_id).schedule
    costs = []
    for round_index in range(shape.rounds):
        round_started = time.perf_counter()
        chain_before = task.watch.total("chain")
        submissions = [submit(env.w3, miner, task.task_id) for miner in miners]
        advance_chain_to(env.w3, schedule.closes(round_index))
        evaluator_s, _ = timed(lambda: evaluator.step(task.task_id))
        costs.append(
            RoundCost(
                round=round_index + 1,
                updates=len(submissions),
                overhead_s=statistics.median(
                    overhead(s, evaluator.check_seconds) for s in submissions
                ),
                chain_s=task.watch.total("chain") - chain_before,
                evaluator_s=evaluator_s,
                wall_s=time.perf_counter() - round_started,
            )
        )
        tick(f"{env.name}, {shape.name}: round {round_index + 1}/{shape.rounds}")
    return costs


def settle_and_verify(
    env: Env, task: BenchTask, shape: Shape, evaluator: Evaluator, stage: Stages
) -> SettlementCost:
    """The rounds' evaluator settles; a fresh evaluator on a fresh client reaches the same
    root; `verify_task` passes without a key and with a miner's: what each stage cost."""
    raw, deployed, store, task_id, chain_id = (
        task.raw,
        task.deployed,
        task.store,
        task.task_id,
        task.chain_id,
    )
    evaluator_account = env.keys[2]  # deployer, sponsor, evaluator, scientist: ROLES
    miner = env.keys[ROLES]  # a miner reads every merge (the sponsor only its delivery)
    warm_s, (report, _) = stage("warm settle", lambda: evaluator.settle(task_id))
    fresh = cast(ChainClient, Timed(fresh_client(raw, deployed), task.watch, "chain"))
    cold = Evaluator(fresh, store, evaluator_account, None, chain_id)
    cold_s, recomputed = stage("cold evaluate", lambda: cold.evaluate(task_id))
    assert recomputed.root == report.root, "a fresh evaluator reached another payout root"
    public_s, public = stage(
        "verify public", lambda: verify_task(fresh_client(raw, deployed), store, task_id, chain_id)
    )
    miner_s, checked = stage(
        "verify miner",
        lambda: verify_task(
            fresh_client(raw, deployed), store, task_id, chain_id, miner, miner_key(miner, task_id)
        ),
    )
    failed = [c for c in [*public.checks, *checked.checks] if not c.ok]
    assert not failed, f"verify failed: {failed}"
    return SettlementCost(
        updates=shape.updates,
        nodes=len(report.nodes),
        warm_s=warm_s,
        cold_s=cold_s,
        verify_public_s=public_s,
        verify_miner_s=miner_s,
        scorings=report.scorings,
        cold_scorings=recomputed.scorings,
    )


def submit(w3: Web3, miner: Miner, task_id: int) -> Submission:
    """The demo's miner pass: the clock moved past the merge window if no merge is readable."""
    result = demo.submit_after_merge_wait(w3, miner, task_id)
    assert isinstance(result, Submission)
    return result


def overhead(submission: Submission, check_seconds: dict[int, float]) -> float:
    """The demo's market overhead of one update: its steps but training, and its check."""
    own = sum(s for step, s in submission.seconds.items() if step != "train")
    return own + check_seconds.get(submission.node_id, 0.0)


def timed(work: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def profiled(work: Callable[[], T], top: int = 15) -> tuple[T, str]:
    """`work()` under cProfile; its result and the top lines by cumulative time."""
    profiler = cProfile.Profile()
    result = profiler.runcall(work)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return result, text.getvalue()


def fresh_client(raw: ChainClient, deployed: int) -> ChainClient:
    """A client with no events read yet, as a program started after the rounds has (it knows
    the deployment block, as from devnet.json: the engine's other tasks are not read)."""
    return ChainClient(raw.w3, raw.address, start_block=deployed)


# ------------------------------------------------------------------ the report


def ratio(value: float, first: float) -> float:
    return value / first if first > 0 else math.inf


def rounds_table(run: TaskRun) -> Table:
    first = run.rounds[0]
    table = Table(
        title=f"{run.engine}: {run.shape.name} ({run.shape.miners} miners), per round, "
        "next to round 1"
    )
    for column in ("round", "updates", "overhead/update s", "x r1", "chain s", "x r1"):
        table.add_column(column, justify="right")
    table.add_column("evaluator s", justify="right")
    table.add_column("x r1", justify="right")
    for cost in shown(run.rounds):
        table.add_row(
            str(cost.round),
            str(cost.updates),
            f"{cost.overhead_s:.4f}",
            f"{ratio(cost.overhead_s, first.overhead_s):.2f}",
            f"{cost.chain_s:.3f}",
            f"{ratio(cost.chain_s, first.chain_s):.2f}",
            f"{cost.evaluator_s:.3f}",
            f"{ratio(cost.evaluator_s, first.evaluator_s):.2f}",
        )
    return table


def settlement_table(runs: Sequence[TaskRun]) -> Table:
    table = Table(
        title="settlement, next to round 1's evaluator step (x r1) and per update "
        "(updates trained: 1 local epoch)"
    )
    table.add_column("engine, task")
    for column in ("nodes", "r1 evaluator s"):
        table.add_column(column, justify="right")
    for what in ("warm settle", "cold evaluate", "verify public", "verify miner"):
        table.add_column(f"{what} s (x r1, ms/update)", justify="right")
    table.add_column("scorings warm/cold", justify="right")
    for run in runs:
        cost = run.settlement
        assert cost is not None
        first = run.rounds[0].evaluator_s
        cells = [
            f"{s:.2f} ({ratio(s, first):.0f}x, {1000 * s / cost.updates:.1f})"
            for s in (cost.warm_s, cost.cold_s, cost.verify_public_s, cost.verify_miner_s)
        ]
        table.add_row(
            f"{run.engine}, {run.shape.name}",
            str(cost.nodes),
            f"{first:.3f}",
            *cells,
            f"{cost.scorings}/{cost.cold_scorings}",
        )
    return table


def shown(rounds: Sequence[RoundCost]) -> Iterator[RoundCost]:
    wanted = set(SHOWN_ROUNDS) | {len(rounds)}
    return (cost for cost in rounds if cost.round in wanted)


def bench_line(runs: Sequence[TaskRun]) -> str:
    """BENCH-SCALE <engine>.<figure>=<seconds>/<ratio to round 1> ..."""
    parts = []
    for run in runs:
        first = run.rounds[0]
        prefix = f"{run.engine}.{run.shape.updates}u"
        if run.shape.name == CURVE.name:
            prefix = f"{run.engine}.curve"
            for cost in shown(run.rounds):
                for name, value, base in (
                    ("overhead", cost.overhead_s, first.overhead_s),
                    ("chain", cost.chain_s, first.chain_s),
                    ("evaluator", cost.evaluator_s, first.evaluator_s),
                ):
                    parts.append(
                        f"{prefix}.{name}.r{cost.round}={value:.4f}/{ratio(value, base):.2f}"
                    )
            continue
        settled = run.settlement
        assert settled is not None
        for name, value in (
            ("settle_warm", settled.warm_s),
            ("evaluate_cold", settled.cold_s),
            ("verify_public", settled.verify_public_s),
            ("verify_miner", settled.verify_miner_s),
        ):
            parts.append(f"{prefix}.{name}={value:.3f}/{ratio(value, first.evaluator_s):.1f}")
    return "BENCH-SCALE " + " ".join(parts)


def target(run: TaskRun) -> str:
    """The issue's target: overhead per update at round 20 within 1.5x of round 1."""
    late = [c for c in run.rounds if c.round == 20] or run.rounds[-1:]
    value = ratio(late[0].overhead_s, run.rounds[0].overhead_s)
    verdict = "met" if value <= 1.5 else "NOT met"
    return (
        f"{run.engine}: overhead per update at round {late[0].round} is {value:.2f}x round 1's "
        f"(target: within 1.5x at round 20): {verdict}"
    )


# ------------------------------------------------------------------ main


def options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("tester", "anvil", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="a smoke test: fewer rounds, updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="every figure, as JSON, to this file")
    parser.add_argument(
        "--tasks",
        default="curve,small,large",
        help="which tasks: curve (4 miners x 40 rounds), small (100 updates), large (1,000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="each settlement stage under cProfile: the largest task's top 15 lines printed",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> list[TaskRun]:
    args = options().parse_args(argv)
    engines = ("tester", "anvil") if args.engine == "both" else (args.engine,)
    every = (QUICK_CURVE, *QUICK_SETTLED) if args.quick else (CURVE, *SETTLED)
    wanted = set(args.tasks.split(","))
    shapes = [s for key, s in zip(("curve", "small", "large"), every, strict=True) if key in wanted]
    accounts = ROLES + max(s.miners for s in shapes)
    runs: list[TaskRun] = []
    for engine in engines:  # one at a time: the figures are the engine's alone
        with contextlib.ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
            env = environment(engine, accounts, folder, stack)
            for shape in shapes:
                runs.append(run_task(env, shape, args.seed, progress, args.profile))
                console.print(rounds_table(runs[-1]))  # as it comes: a long run shows its part
                if args.json is not None:
                    args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    settled = [r for r in runs if r.shape in SETTLED + QUICK_SETTLED]
    if settled:
        console.print(settlement_table(settled))
    for run in runs:
        if run.shape in (CURVE, QUICK_CURVE):
            console.print(target(run))
    for engine in engines:
        largest = max((r for r in runs if r.engine == engine), key=lambda r: r.shape.updates)
        for name, lines in largest.profiles.items():
            console.print(f"{engine}, {largest.shape.name}, {name}: cProfile", markup=False)
            console.print(lines, markup=False, highlight=False)
    wall = time.perf_counter() - STARTED
    console.print(
        "wall time: "
        + ", ".join(f"{r.engine} {r.shape.name} {r.wall_s:.1f} s" for r in runs)
        + f"; the whole bench {wall:.1f} s"
    )
    print(bench_line(runs), flush=True)
    return runs


def progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
