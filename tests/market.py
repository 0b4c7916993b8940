"""A small market the flow tests share: one in-process chain, a local store, digits shards, a
tiny architecture, and the library's real roles (sponsor functions, `Miner`, `Evaluator`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.dev.devchain import advance_to, local_web3
from marketplace.dev.shards import digits_splits, dirichlet_shards, subset
from marketplace.protocol.tasks import account_key
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import create_task, propose_architecture, reveal
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.messages import (
    Aggregation,
    DataSchema,
    Metric,
    RewardSplit,
    TaskParams,
    TaskSpec,
)
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.runtime.connect import Connection
from marketplace.runtime.state import StateFile
from marketplace.storage.stores import LocalStore
from miner.config import MinerConfig
from miner.ledger import PrivacyLedger
from miner.parents import Waiting
from miner.submission import Submission
from miner.trainer import Trainer
from miner.worker import Miner

ETHER = 10**18
ROUND = 3600
DEPOSIT = ETHER // 100
BOUNTY = 10 * ETHER
TINY = ModelSpec(
    input_shape=[64],
    layers=[
        {"type": "linear", "in_features": 64, "out_features": 16},
        {"type": "relu"},
        {"type": "linear", "in_features": 16, "out_features": 10},
    ],
)
SPLIT = RewardSplit(expertise_bps=2000, data_bps=5000, compute_bps=2000)


def dev_keys() -> list[LocalAccount]:
    """eth-tester's ten funded accounts (keys 1 to 10)."""
    return [Account.from_key(i.to_bytes(32, "big")) for i in range(1, 11)]


@dataclass
class Market:
    w3: Web3
    chain: ChainClient
    store: LocalStore
    folder: Path
    keys: list[LocalAccount]
    shards: list[Dataset]
    validation: Dataset
    test: Dataset
    task_id: int = 0
    miners: list[Miner] = field(default_factory=list)
    evaluator: Evaluator | None = None

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @property
    def sponsor(self) -> LocalAccount:
        return self.keys[0]

    def connection(self, account: LocalAccount) -> Connection:
        """What `account` acts through on this market: its key, the chain, the store."""
        return Connection(account, self.chain, self.store, self.chain_id)

    @property
    def evaluator_account(self) -> LocalAccount:
        return self.keys[1]

    @property
    def scientist(self) -> LocalAccount:
        return self.keys[2]

    def create(
        self,
        rounds: int = 2,
        evaluators: list[LocalAccount] | None = None,
        aggregation: Aggregation | None = None,
        max_submissions_per_round: int = 1,
        prox_mu: float = 0.0,
        class_guard_bps: int = TaskSpec.model_fields["class_guard_bps"].default,
        **params: Any,
    ) -> int:
        evaluators = evaluators or [self.evaluator_account]
        spec = TaskSpec(
            name="digits",
            metric=Metric.ACCURACY,
            data=DataSchema(num_features=64, num_classes=10),
            split=SPLIT,
            aggregation=aggregation,
            max_submissions_per_round=max_submissions_per_round,
            prox_mu=prox_mu,
            class_guard_bps=class_guard_bps,
        )
        task_params = TaskParams(
            bounty=BOUNTY,
            deposit=DEPOSIT,
            validation_commit=bytes(32),
            round_duration=ROUND,
            rounds=rounds,
            reveal_window=ROUND,
            evaluation_window=ROUND,
            challenge_window=600,
            claim_window=7 * 86_400,
            evaluators=tuple(e.address for e in evaluators),
            **params,
        )
        created = create_task(
            self.connection(self.sponsor),
            to_csv(self.validation),
            spec,
            task_params,
            [account_key(e).public_hex for e in evaluators],
        )
        self.task_id = created.task_id
        return created.task_id

    def propose(self, model: ModelSpec = TINY, seed: int = 1) -> int:
        scientist = self.connection(self.scientist)
        result = propose_architecture(scientist, self.task_id, model, init_weights(model, seed))
        assert result.value is not None
        return result.value

    def add_miners(
        self,
        count: int = 3,
        trainer: Trainer | None = None,
        epochs: int = 2,
        dp_epsilon: float | None = None,
        ledger: PrivacyLedger | None = None,
        lineages: Sequence[int | None] = (None,),
    ) -> None:
        """`count` data owners, each running one miner per lineage (None: the best merge)."""
        for i in range(count):
            path = self.folder / "private" / f"miner-{i}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(to_csv(self.shards[i]))
            for lineage in lineages:
                name = f"miner-{i}" + ("" if lineage is None else f"-lineage-{lineage}")
                config = MinerConfig(epochs=epochs, seed=i, dp_epsilon=dp_epsilon, lineage=lineage)
                self.miners.append(
                    Miner(
                        self.connection(self.keys[4 + i]),
                        trainer or Trainer(),
                        path,
                        StateFile(self.folder / "state" / f"{name}.json"),
                        config,
                        ledger=ledger,
                    )
                )

    def make_evaluator(self, account: LocalAccount | None = None) -> Evaluator:
        account = account or self.evaluator_account
        evaluator = Evaluator(
            self.connection(account),
            StateFile(self.folder / "state" / f"evaluator-{account.address}.json"),
        )
        if account == self.evaluator_account:
            self.evaluator = evaluator
        return evaluator

    def end_round(self, round_index: int) -> list[str]:
        """Close the round; the miners reveal their mask seeds (secure aggregation rounds
        only), then the evaluator merges."""
        advance_to(self.w3, self.chain.task(self.task_id).round_end(round_index))
        for miner in self.miners:
            miner.secure.reveal_masks(self.task_id)
        assert self.evaluator is not None
        return self.evaluator.step(self.task_id)

    def submit(self, miner: Miner) -> Submission | None:
        """The miner's `submit_round`; while it waits for the previous round's merge (none was
        posted, confirmed or readable), the clock moves to the end of the merge window first."""
        result = miner.submit_round(self.task_id)
        if isinstance(result, Waiting):
            advance_to(self.w3, result.until)
            result = miner.submit_round(self.task_id)
        assert not isinstance(result, Waiting)
        return result

    def run_rounds(self, rounds: int) -> None:
        for round_index in range(rounds):
            for miner in self.miners:
                self.submit(miner)
            self.end_round(round_index)

    def reveal(self) -> None:
        reveal(self.connection(self.sponsor), self.task_id)

    def finalize(self) -> None:
        task = self.chain.task(self.task_id)
        advance_to(self.w3, task.agreed_at + task.challenge_window)
        self.chain.finalize(self.sponsor.address, self.task_id)

    def run_to_claims(self, miners: int, claimants: int, rounds: int = 2) -> None:
        """A whole task: created, proposed, `rounds` rounds of `miners` miners (1 epoch each),
        revealed, settled, finalized, and claimed by the first `claimants` miners."""
        self.create(rounds=rounds)
        self.propose()
        evaluator = self.make_evaluator()
        self.add_miners(miners, epochs=1)
        self.run_rounds(rounds)
        self.reveal()
        evaluator.step(self.task_id)
        self.finalize()
        for miner in self.miners[:claimants]:
            miner.collect(self.task_id)


def new_market(folder: Path, shards: int = 4, alpha: float = 0.5) -> Market:
    w3 = local_web3()
    keys = dev_keys()
    chain = ChainClient.deploy(w3, keys[9].address, min_window=DEV_MIN_WINDOW)
    train, validation, test = digits_splits(seed=0)
    rows = dirichlet_shards(train.labels, shards, alpha, seed=1, min_size=20)
    return Market(
        w3,
        chain,
        LocalStore(folder / "blobs"),
        folder,
        keys,
        [subset(train, r) for r in rows],
        validation,
        test,
    )
