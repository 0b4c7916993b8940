"""One task of `make bench-scale` measured: the engine's chain, accounts and store; a fresh
contract with the bench's task; its miners and rounds, each round's cost; and its settlement,
a fresh evaluator and both verifications, each stage timed (or profiled).
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

from bench_scale_figures import RoundCost, SettlementCost, Shape, TaskRun
from demo_report import ETHER, market_overhead
from demo_setup import start_engines
from demo_steps import submit_after_merge_wait, task_params
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev.devchain import local_web3, tester_of
from marketplace.dev.devnet import advance_chain_to, anvil_keys
from marketplace.dev.shards import digits_splits, dirichlet_shards, subset
from marketplace.protocol.tasks import account_key, miner_key
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import create_task, propose_architecture, reveal
from marketplace.roles.verify import verify_task
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.messages import DataSchema, Metric, Phase, RewardSplit, TaskSpec
from marketplace.rules.models import init_weights, mlp
from marketplace.runtime.connect import Connection
from marketplace.runtime.state import StateFile
from marketplace.runtime.timing import Stopwatch, Timed
from marketplace.storage.stores import BlobStore, LocalStore
from miner.config import MinerConfig
from miner.submission import Submission
from miner.trainer import Trainer
from miner.worker import Miner

ROLES = 4  # deployer, sponsor, evaluator, scientist; the miners' accounts follow
LEARNING_RATE = 5e-3  # one local epoch on 40-300 rows: enough for the rounds to merge
EXTRA_BALANCE = 1_000 * ETHER  # each account past the node's ten funded ones
T = TypeVar("T")


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
    keys = [Account.from_key(key) for key in anvil_keys(accounts)]
    w3, store, _ = start_engines(folder, stack, keys, timeout=120)
    for key in keys[10:]:  # anvil funds ten
        w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [key.address, hex(EXTRA_BALANCE)])
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

    def connection(self, account: LocalAccount) -> Connection:
        """What `account` acts through here: its key, the chain, the store."""
        return Connection(account, self.chain, self.store, self.chain_id)


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
    evaluator = Evaluator(task.connection(evaluator_account), state)
    run.rounds = run_rounds(env, task, shape, miners, evaluator, tick)
    assert task.chain.phase(task.task_id) is Phase.REVEAL
    reveal(task.connection(sponsor), task.task_id)
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
    params = task_params(shape.rounds, evaluator_account.address)
    evaluator_public = [account_key(evaluator_account).public_hex]
    sponsor_side = Connection(sponsor, chain, store, chain_id)
    task_id = create_task(sponsor_side, validation_csv, spec, params, evaluator_public).task_id
    model = mlp(64, 128, 10)  # the demo's small architecture
    scientist_side = Connection(scientist, chain, store, chain_id)
    propose_architecture(scientist_side, task_id, model, init_weights(model, 1))
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
            task.connection(account),
            trainer,
            subset(train, rows),
            StateFile(task.state / f"miner-{i + 1}.json"),
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
                    market_overhead(s, evaluator.check_seconds) for s in submissions
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
    cold = Evaluator(Connection(evaluator_account, fresh, store, chain_id), None)
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
    result = submit_after_merge_wait(w3, miner, task_id)
    assert isinstance(result, Submission)
    return result


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
