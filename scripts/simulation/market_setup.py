"""The set-up of one simulated market: the data sets and the architectures their data
scientists propose, the market's configuration, a fresh in-process chain and store with the
sponsor's task and both architectures posted, and the roster's agents on funded accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import BlockIdentifier

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev.devchain import local_web3, tester_of
from marketplace.dev.shards import breast_cancer_splits, digits_splits, dirichlet_shards, subset
from marketplace.protocol.tasks import account_key
from marketplace.roles.sponsor import create_task, propose_architecture
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.messages import DataSchema, Metric, RewardSplit, TaskParams, TaskSpec
from marketplace.rules.models import ModelSpec, init_weights, mlp
from marketplace.runtime.connect import Connection
from marketplace.storage.stores import LocalStore

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

    def connection(self, account: LocalAccount) -> Connection:
        """What `account` acts through here: its key, the chain, the store."""
        return Connection(account, self.chain, self.store, self.chain_id)


def post_task(config: MarketConfig, problem: Problem, folder: Path, validation: Dataset) -> Posted:
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
    sponsor_side = Connection(sponsor, chain, store, chain_id)
    task_id = create_task(sponsor_side, to_csv(validation), spec, params, evaluator_key).task_id
    arch_ids: list[int] = []
    for scientist, model, seed in zip(
        scientists, (problem.good, problem.weak), ARCH_SEEDS, strict=True
    ):
        proposed = propose_architecture(
            Connection(scientist, chain, store, chain_id), task_id, model, init_weights(model, seed)
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


def make_agents(config: MarketConfig, env: Env, train: Dataset, arch_ids: list[int]) -> list[Agent]:
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
