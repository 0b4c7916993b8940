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

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import BlockIdentifier

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.chain.events import Claimed, Reclaimed, Refunded
from marketplace.dev.devchain import local_web3, tester_of
from marketplace.dev.devnet import advance_chain_to
from marketplace.dev.shards import breast_cancer_splits, digits_splits, dirichlet_shards, subset
from marketplace.protocol.reports import agreed_report, claim_payout
from marketplace.protocol.tasks import account_key, nodes_by_id
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import create_task, propose_architecture, reveal
from marketplace.rules.dag import architecture_of
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.evaluation import score
from marketplace.rules.messages import (
    DataSchema,
    Metric,
    NodeKind,
    NodeRecord,
    Phase,
    RewardSplit,
    TaskParams,
    TaskSpec,
)
from marketplace.rules.models import ModelSpec, init_weights, mlp
from marketplace.rules.rewards import BPS
from marketplace.runtime.state import StateFile
from marketplace.storage.stores import LocalStore
from marketplace.wire.report import PayoutReport
from miner.train_config import TrainConfig
from miner.trainer import Trainer

from .agents import KINDS, Agent, Env

ETHER = 10**18
BOUNTY = 10 * ETHER
DEPOSIT = ETHER // 100
ROUND_SECONDS = 3600
SPLIT = RewardSplit(expertise_bps=2000, data_bps=5000, compute_bps=2000)
FUNDING = 10 * ETHER  # what each agent account is given (deposits are 0.01 ETH)
AGENT_KEYS = 1_000  # agent accounts are the keys AGENT_KEYS + 0, + 1, ... (eth-tester: 1-10)
ARCH_SEEDS = (1, 2)  # the good and the weak architecture's initial weights

Splits = Callable[[int], tuple[Dataset, Dataset, Dataset]]


@dataclass(frozen=True)
class Problem:
    """A data set and the two architectures its data scientists propose."""

    splits: Splits
    features: int
    classes: int
    good: ModelSpec
    weak: ModelSpec  # underfits: a hidden layer narrower than the classes need


DATASETS: dict[str, Problem] = {
    "digits": Problem(lambda s: digits_splits(seed=s), 64, 10, mlp(64, 128, 10), mlp(64, 2, 10)),
    "breast_cancer": Problem(
        lambda s: breast_cancer_splits(seed=s), 30, 2, mlp(30, 32, 2), mlp(30, 1, 2)
    ),
}


@dataclass(frozen=True)
class MarketConfig:
    """One market: the data set, who takes part (kind, count), the rounds and the seed.

    `without`: one agent (by name, e.g. "honest-2") left out, everything else the same (its
    accounts, seeds and shard are drawn as if it were there): the true marginal value run.
    `honest_variant`: kinds (e.g. "sybil") whose agents act as their honest variant (the same
    work without the lie, `agents.py`), everything else the same (accounts, shards and seeds
    drawn alike): the counterfactual the lie is measured against.
    """

    dataset: str = "breast_cancer"
    roster: tuple[tuple[str, int], ...] = (("honest", 3),)
    rounds: int = 4
    seed: int = 0
    alpha: float = 0.5
    epochs: int = 5
    learning_rate: float = 1e-3
    without: str | None = None
    honest_variant: frozenset[str] = frozenset()

    def names(self) -> list[str]:
        """Every agent's name in the full roster, in acting order."""
        return [f"{kind}-{i + 1}" for kind, count in self.roster for i in range(count)]


@dataclass(frozen=True)
class Paid:
    """What some accounts were paid by the task, from the agreed report's leaves (wei), the
    reputation points of those leaves, and what the chain's Claimed events paid them."""

    data: int = 0
    compute: int = 0
    expertise: int = 0
    deposits: int = 0
    points: int = 0
    claimed: int = 0

    def __add__(self, other: Paid) -> Paid:
        return Paid(
            self.data + other.data,
            self.compute + other.compute,
            self.expertise + other.expertise,
            self.deposits + other.deposits,
            self.points + other.points,
            self.claimed + other.claimed,
        )

    @property
    def amount(self) -> int:
        return self.data + self.compute + self.expertise + self.deposits


@dataclass(frozen=True)
class Outcome:
    """One agent (or the data scientists) in one market."""

    name: str
    kind: str
    accounts: tuple[str, ...]
    submissions: int
    valid: int
    paid: Paid


@dataclass(frozen=True)
class Escrow:
    """Every wei into and out of the contract for the task, from the chain."""

    bounty: int
    deposits_in: int  # the deposit of every architecture and update submitted
    held: int  # the contract's balance before the first claim
    claimed: int  # Claimed events
    refunded: int  # Refunded events
    reclaimed: int  # Reclaimed events
    left: int  # the contract's balance after the reclaim

    @property
    def balanced(self) -> bool:
        """bounty + deposits in == claims + refunds + reclaim, to the wei, nothing left."""
        paid_out = self.claimed + self.refunded + self.reclaimed
        return self.held == self.bounty + self.deposits_in == paid_out and self.left == 0


@dataclass(frozen=True)
class MarketRun:
    config: MarketConfig
    agents: tuple[Outcome, ...]
    scientists: Outcome
    escrow: Escrow
    pools: int  # the data and compute pools, wei
    report: PayoutReport
    records: dict[int, NodeRecord]
    reputation: dict[str, int]  # account -> the chain's reputation after the claims
    winner_score: int  # validation rows right
    winner_accuracy: float  # on the test split
    central_accuracy: float | None  # the winner's architecture trained on the honest union
    seconds: float

    def share(self, outcomes: Iterable[Outcome]) -> float:
        """What these took of the data + compute pools."""
        return sum(o.paid.data + o.paid.compute for o in outcomes) / self.pools

    def of_kind(self, kind: str) -> list[Outcome]:
        return [o for o in self.agents if o.kind == kind]

    @property
    def sponsor_paid(self) -> int:
        """What the sponsor gave away: the bounty less what it reclaimed (the deposits paid
        back are the submitters' own money)."""
        return self.escrow.bounty - self.escrow.reclaimed


class IndexedChain(ChainClient):
    """The project's `ChainClient` reusing contract calls while the chain has not moved (every
    transaction mines a block): the roles ask for the same task state several times a step."""

    def __init__(self, w3: Web3, address: str) -> None:
        super().__init__(w3, address)
        self._calls: dict[tuple[str, str], Any] = {}
        self._calls_at = -1

    def _call(self, fn_name: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        if block != "latest":
            return super()._call(fn_name, *args, block=block)
        latest = int(self.w3.eth.block_number)
        if latest != self._calls_at:
            self._calls.clear()
            self._calls_at = latest
        key = (fn_name, repr(args))
        if key not in self._calls:
            self._calls[key] = super()._call(fn_name, *args)
        return self._calls[key]


@dataclass(frozen=True)
class Posted:
    """The market once the task and its architectures are on-chain: what the later steps share."""

    w3: Web3
    chain: IndexedChain
    store: LocalStore
    chain_id: int
    sponsor: LocalAccount
    evaluator: LocalAccount
    scientists: list[LocalAccount]
    task_id: int
    arch_ids: list[int]
    challenge_window: int


def run_market(config: MarketConfig, folder: Path, centralized: bool = True) -> MarketRun:
    """Run one market to the end; `centralized`: also train the baseline for the accuracy
    ratio (the marginal value runs skip it)."""
    started = time.perf_counter()
    problem = DATASETS[config.dataset]
    train, validation, test = problem.splits(config.seed)
    market = _post_task(config, problem, folder, validation)
    trainer = Trainer()
    env = Env(
        market.w3, market.chain, market.store, folder, market.task_id, config.rounds, trainer,
        config.epochs, config.learning_rate,
    )  # fmt: skip
    agents = _agents(config, env, train, market.arch_ids)
    state = StateFile(folder / "state" / "evaluator.json")
    evaluator = Evaluator(market.chain, market.store, market.evaluator, state, market.chain_id)
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


def _post_task(config: MarketConfig, problem: Problem, folder: Path, validation: Dataset) -> Posted:
    """A fresh chain and store, the sponsor's task with the validation split sealed to the
    evaluator, and the good and the weak architecture proposed."""
    w3 = local_web3()
    keys = [Account.from_key(i.to_bytes(32, "big")) for i in range(1, 11)]
    sponsor, evaluator_account, scientists = keys[0], keys[1], keys[2:4]
    deployed = ChainClient.deploy(w3, keys[9].address, min_window=DEV_MIN_WINDOW)
    chain = IndexedChain(w3, deployed.address)
    store = LocalStore(folder / "blobs")
    chain_id = int(w3.eth.chain_id)
    spec = TaskSpec(
        name=config.dataset,
        metric=Metric.ACCURACY,
        data=DataSchema(num_features=problem.features, num_classes=problem.classes),
        split=SPLIT,
        max_blob_bytes=8 * 1024 * 1024,
    )
    params = TaskParams(
        bounty=BOUNTY,
        deposit=DEPOSIT,
        validation_commit=bytes(32),
        round_duration=ROUND_SECONDS,
        rounds=config.rounds,
        reveal_window=ROUND_SECONDS,
        evaluation_window=ROUND_SECONDS,
        challenge_window=600,
        claim_window=7 * 86_400,
        evaluators=(evaluator_account.address,),
    )
    evaluator_key = [account_key(evaluator_account).public_hex]
    task_id = create_task(
        chain, store, sponsor, chain_id, to_csv(validation), spec, params, evaluator_key
    ).task_id
    arch_ids: list[int] = []
    for scientist, model, seed in zip(
        scientists, (problem.good, problem.weak), ARCH_SEEDS, strict=True
    ):
        proposed = propose_architecture(
            chain, store, scientist, task_id, model, init_weights(model, seed)
        )
        assert proposed.value is not None
        arch_ids.append(proposed.value)
    return Posted(
        w3,
        chain,
        store,
        chain_id,
        sponsor,
        evaluator_account,
        scientists,
        task_id,
        arch_ids,
        params.challenge_window,
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
    reveal(chain, store, market.sponsor, market.chain_id, task_id)
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


def _agents(config: MarketConfig, env: Env, train: Dataset, arch_ids: list[int]) -> list[Agent]:
    """The roster's agents but `config.without`: accounts, shards and seeds are drawn for the
    full roster, so leaving one out changes nothing else. Honest miners start on the two
    architectures in turn; adversaries on the good one."""
    names = config.names()
    kinds = [KINDS[name.rsplit("-", 1)[0]] for name in names]
    holders = [i for i, cls in enumerate(kinds) if cls.needs_data]
    rows = dirichlet_shards(train.labels, len(holders), config.alpha, config.seed + 1, 20)
    shards = {i: subset(train, r) for i, r in zip(holders, rows, strict=True)}
    agents = []
    next_key = AGENT_KEYS
    honest_seen = 0
    for i, (name, cls) in enumerate(zip(names, kinds, strict=True)):
        accounts = [_funded(env.w3, next_key + k) for k in range(cls.accounts_used)]
        next_key += cls.accounts_used
        architecture = arch_ids[honest_seen % 2] if cls.honest else arch_ids[0]
        honest_seen += cls.honest
        if name != config.without:
            seed = config.seed + 10 * i
            variant = cls.kind in config.honest_variant
            agents.append(cls(name, env, accounts, shards.get(i), seed, architecture, variant))
    return agents


def _funded(w3: Web3, key: int) -> LocalAccount:
    """A fresh account the in-process chain signs for, given FUNDING by a dev account."""
    account: LocalAccount = Account.from_key(key.to_bytes(32, "big"))
    tester_of(w3).add_account("0x" + bytes(account.key).hex())
    w3.eth.send_transaction({"from": w3.eth.accounts[9], "to": account.address, "value": FUNDING})
    return account


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


def audit(run: MarketRun) -> list[str]:
    """What is wrong with the run's money (nothing, for any sane reward rule): the escrow
    balanced to the wei, the sponsor paying at most the bounty, every agent claiming exactly
    its leaves and holding exactly their reputation points."""
    problems = []
    escrow = run.escrow
    if not escrow.balanced:
        problems.append(f"the escrow does not balance: {escrow}")
    beyond_deposits = sum(e.amount - e.deposits for e in run.report.payouts)
    if run.sponsor_paid > escrow.bounty or beyond_deposits > escrow.bounty:
        problems.append(
            f"the sponsor paid {run.sponsor_paid} (leaves less deposits: {beyond_deposits}), "
            f"over the bounty {escrow.bounty}"
        )
    for outcome in (*run.agents, run.scientists):
        paid = outcome.paid
        if paid.claimed != paid.amount:
            problems.append(f"{outcome.name} claimed {paid.claimed}, its leaves say {paid.amount}")
        points = sum(run.reputation[a] for a in outcome.accounts)
        if points != outcome.paid.points:
            problems.append(
                f"{outcome.name} holds {points} points, its leaves say {outcome.paid.points}"
            )
    return problems
