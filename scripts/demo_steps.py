"""The market steps the demo's roles take: the sponsor's task, the data scientists'
architectures, a miner per data owner, every round (joins, submissions, mask reveals, the
evaluator's merge), and the settlement from the reveal to the reclaim.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from demo_data import owner_config, private_file
from demo_report import ETHER, console, widths
from demo_setup import DemoMarket
from web3 import Web3

from marketplace.chain.events import TxResult
from marketplace.dev.devnet import advance_chain_to
from marketplace.protocol.reports import agreed_report, claim_payout
from marketplace.protocol.tasks import account_key, paillier_hex
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import create_task, propose_architecture, reveal
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.messages import (
    Aggregation,
    DataSchema,
    Metric,
    Phase,
    RewardSplit,
    TaskParams,
    TaskSpec,
)
from marketplace.rules.models import ModelSpec, init_weights, mlp
from marketplace.runtime.state import StateFile
from marketplace.wire.report import PayoutReport
from miner.ledger import PrivacyLedger
from miner.parents import Waiting
from miner.submission import Submission
from miner.trainer import Trainer
from miner.worker import Miner

ROUND_SECONDS = 3600
SMALL_SEED, LARGE_SEED = 1, 2  # the two architectures' initial weights
LARGE_WIDTHS = (64, 2048, 64, 10)  # the 1 MB MLP


@dataclass
class Rounds:
    """What the rounds left: the miners, their labels and ledgers, every submission."""

    miners: list[Miner]
    labels: list[str]
    ledgers: list[PrivacyLedger | None]
    submissions: list[Submission]


def post_task(
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
    params = task_params(args.rounds, market.evaluator.address)
    created = create_task(
        market.connection(market.sponsor),
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


def task_params(rounds: int, evaluator: str) -> TaskParams:
    """The demo's terms: 10 ETH, 0.01 ETH deposits, hour-long rounds and windows, a 10-minute
    challenge window, a week to claim, one evaluator (scripts/bench_scale.py posts the same)."""
    return TaskParams(
        bounty=10 * ETHER,
        deposit=ETHER // 100,
        validation_commit=bytes(32),
        round_duration=ROUND_SECONDS,
        rounds=rounds,
        reveal_window=ROUND_SECONDS,
        evaluation_window=ROUND_SECONDS,
        challenge_window=600,
        claim_window=7 * 86_400,
        evaluators=(evaluator,),
    )


def propose_architectures(
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
            market.connection(scientist), task_id, model, init_weights(model, seed)
        )
        assert result.value is not None
        arch_ids.append(result.value)
    console.print(f"architectures: {arch_ids[0]} = 64-128-10, {arch_ids[1]} = {widths(large)}")
    return small, large, arch_ids


def make_miners(
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
            market.connection(market.owners[i]),
            trainer,
            private_file(market.folder, i),
            StateFile(state / f"{_label(i, lineage)}.json".replace("/", "-")),
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


def run_rounds(
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


def settle(
    market: DemoMarket, task_id: int, params: TaskParams, evaluator: Evaluator
) -> tuple[PayoutReport, TxResult]:
    """Reveal, score and post the payout root, finalize after the challenge window, claim
    every payout and reclaim the rest: (the agreed report, the reclaim)."""
    chain = market.chain
    assert chain.phase(task_id) is Phase.REVEAL
    reveal(market.connection(market.sponsor), task_id)
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
