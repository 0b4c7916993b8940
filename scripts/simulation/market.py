"""One simulated market, from the task to the sponsor's reclaim, and its exact accounting.

The market of `make demo` on one in-process eth-tester chain and a local blob store, the clock
moved instead of waited on: a sponsor posts a 10 ETH task (the validation split sealed to one
honest evaluator, a test split nobody sees), two data scientists propose a good and a weak
architecture, the agents (`agents.py`) act every round and the evaluator merges; then the
sponsor reveals, the evaluator posts the payout root and report, the sponsor finalizes, every
leaf is claimed and the sponsor reclaims the rest. Money is read back from the posted report
(each leaf's parts) and from the chain (Claimed, Refunded and Reclaimed events, the contract's
balance), so the figures are whatever the current reward rule pays.
"""

import time
from pathlib import Path

import numpy as np
from eth_account.signers.local import LocalAccount

from marketplace.chain.client import ChainClient
from marketplace.chain.events import Claimed, Reclaimed, Refunded
from marketplace.dev.devnet import advance_chain_to
from marketplace.protocol.reports import agreed_report, claim_payout
from marketplace.protocol.tasks import nodes_by_id
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import reveal
from marketplace.rules.dag import architecture_of
from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import score
from marketplace.rules.messages import Metric, NodeKind, NodeRecord, Phase
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.rules.rewards import BPS
from marketplace.runtime.state import StateFile
from marketplace.wire.report import PayoutReport
from miner.train_config import TrainConfig
from miner.trainer import Trainer

from .accounting import Escrow, MarketRun, Outcome, Paid
from .agents import Agent, Env
from .market_setup import (
    ARCH_SEEDS,
    BOUNTY,
    DATASETS,
    DEPOSIT,
    SPLIT,
    MarketConfig,
    Posted,
    make_agents,
    post_task,
)


def run_market(config: MarketConfig, folder: Path, centralized: bool = True) -> MarketRun:
    """Run one market to the end; `centralized`: also train the baseline for the accuracy
    ratio (the marginal value runs skip it)."""
    started = time.perf_counter()
    problem = DATASETS[config.dataset]
    train, validation, test = problem.splits(config.seed)
    market = post_task(config, problem, folder, validation)
    trainer = Trainer()
    env = Env(
        market.w3, market.chain, market.store, folder, market.task_id, config.rounds, trainer,
        config.epochs, config.learning_rate,
    )  # fmt: skip
    agents = make_agents(config, env, train, market.arch_ids)
    state = StateFile(folder / "state" / "evaluator.json")
    evaluator = Evaluator(market.connection(market.evaluator), state)
    _play_rounds(market, agents, env, evaluator, config.rounds)
    report, held = _settle(market, evaluator)

    chain, task_id = market.chain, market.task_id
    records = nodes_by_id(chain, task_id)
    escrow = _escrow(chain, task_id, records, held)
    claimed = _claimed_by(chain, task_id)
    outcomes = tuple(_outcome(a.name, a.accounts, records, report, claimed) for a in agents)
    science = _outcome("scientists", market.scientists, records, report, claimed)
    baseline = trainer if centralized else None
    quality = _winner_quality(market, records, report, evaluator, agents, test, config, baseline)
    everyone = [o for outcome in (*outcomes, science) for o in outcome.accounts]
    return MarketRun(
        config,
        outcomes,
        science,
        escrow,
        BOUNTY * (SPLIT.data_bps + SPLIT.compute_bps) // BPS,
        report,
        records,
        {account: chain.reputation(account) for account in everyone},
        *quality,
        time.perf_counter() - started,
    )


def _play_rounds(
    market: Posted, agents: list[Agent], env: Env, evaluator: Evaluator, rounds: int
) -> None:
    """Every round: each agent acts, the clock moves to the round's end, the evaluator merges."""
    schedule = market.chain.task(market.task_id).schedule
    for round_index in range(rounds):
        for agent in agents:
            agent.act(env, round_index)
        advance_chain_to(market.w3, schedule.closes(round_index))
        evaluator.step(market.task_id)


def _settle(market: Posted, evaluator: Evaluator) -> tuple[PayoutReport, int]:
    """Reveal, post the payout root, finalize after the challenge window, claim every leaf and
    reclaim the rest: (the agreed report, the contract's balance before the first claim)."""
    chain, store, task_id = market.chain, market.store, market.task_id
    assert chain.phase(task_id) is Phase.REVEAL
    reveal(market.connection(market.sponsor), task_id)
    evaluator.step(task_id)
    report = agreed_report(chain, store, task_id)
    advance_chain_to(market.w3, chain.task(task_id).agreed_at + market.challenge_window)
    chain.finalize(market.sponsor.address, task_id)
    held = int(market.w3.eth.get_balance(chain.address))
    for entry in report.payouts:
        claim_payout(chain, store, entry.account, task_id)
    chain.reclaim(market.sponsor.address, task_id)
    return report, held


def _winner_quality(
    market: Posted,
    records: dict[int, NodeRecord],
    report: PayoutReport,
    evaluator: Evaluator,
    agents: list[Agent],
    test: Dataset,
    config: MarketConfig,
    trainer: Trainer | None,
) -> tuple[int, float, float | None]:
    """(the winner's validation score, its test accuracy, and with a `trainer` the test
    accuracy of its architecture trained on the honest agents' union, else None)."""
    winner = report.winner
    assert winner is not None  # the architectures are valid nodes
    view = evaluator.view(market.task_id)
    model = view.architectures[architecture_of(records, winner)]
    weights = view.verdicts[winner].weights
    assert weights is not None
    central = None
    if trainer is not None:
        union = [a.shard for a in agents if a.honest and a.shard is not None]
        seed = ARCH_SEEDS[market.arch_ids.index(architecture_of(records, winner))]
        central = _centralized(trainer, model, seed, union, test, config)
    return (
        next(n.score for n in report.nodes if n.node_id == winner),
        score(model, weights, test, Metric.ACCURACY) / len(test),
        central,
    )


def _escrow(chain: ChainClient, task_id: int, records: dict[int, NodeRecord], held: int) -> Escrow:
    paying = [r for r in records.values() if r.kind in (NodeKind.ARCHITECTURE, NodeKind.UPDATE)]
    return Escrow(
        BOUNTY,
        DEPOSIT * len(paying),
        held,
        sum(e.amount for e in chain.events(Claimed, task_id=task_id)),
        sum(e.amount for e in chain.events(Refunded, task_id=task_id)),
        sum(e.amount for e in chain.events(Reclaimed, task_id=task_id)),
        int(chain.w3.eth.get_balance(chain.address)),
    )


def _claimed_by(chain: ChainClient, task_id: int) -> dict[str, int]:
    """Account (lower case) -> what the task's Claimed events paid it."""
    sums: dict[str, int] = {}
    for event in chain.events(Claimed, task_id=task_id):
        account = event.account.lower()
        sums[account] = sums.get(account, 0) + event.amount
    return sums


def _outcome(
    name: str,
    accounts: list[LocalAccount],
    records: dict[int, NodeRecord],
    report: PayoutReport,
    claimed: dict[str, int],
) -> Outcome:
    addresses = tuple(str(a.address) for a in accounts)
    mine = {a.lower() for a in addresses}
    verdicts = {n.node_id: n for n in report.nodes}
    submitted = [
        r.node_id
        for r in records.values()
        if r.kind is not NodeKind.MERGE and r.author.lower() in mine
    ]
    paid = Paid()
    for address in addresses:
        entry = report.entry_for(address)
        if entry is not None:
            parts = (entry.data, entry.compute, entry.expertise, entry.deposits, entry.points)
            paid += Paid(*parts, claimed.get(address.lower(), 0))
    return Outcome(
        name,
        name.rsplit("-", 1)[0],
        addresses,
        len(submitted),
        sum(verdicts[n].valid for n in submitted),
        paid,
    )


def _centralized(
    trainer: Trainer,
    model: ModelSpec,
    seed: int,
    shards: list[Dataset],
    test: Dataset,
    config: MarketConfig,
) -> float:
    """Test accuracy of the winner's architecture trained on the union of the honest shards
    for as many epochs as the market's rounds x local epochs (as `make demo` computes it)."""
    union = Dataset(
        np.concatenate([s.features for s in shards]),
        np.concatenate([s.labels for s in shards]),
        shards[0].num_classes,
    )
    central = trainer.train(
        model,
        init_weights(model, seed),
        union,
        TrainConfig(
            epochs=config.epochs * config.rounds,
            batch_size=32,
            learning_rate=config.learning_rate,
            optimizer="adam",
            seed=config.seed,
        ),
    )
    return score(model, central.weights, test, Metric.ACCURACY) / len(test)
