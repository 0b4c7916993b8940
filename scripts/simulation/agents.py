"""The simulator's agents: what each kind submits every round, through the library's own roles.

Every agent acts through `Miner` (one per account): honest kinds through `Miner.submit_round`
(its data, trainer or declared row count changed, nothing else), adversaries by reading the
latest merge with `ParentChooser.choose` (merges are sealed to every registered miner) and
submitting weights of their choosing with `Miner.submit_weights` (the same sealing, upload and
`ChainClient.submit_update` as an honest update). Nothing here knows the reward rule.

| kind | accounts | what it submits each round |
|---|---|---|
| honest | 1 | trains its shard on the best merge it can read, declares its rows |
| late_joiner | 1 | an honest miner that starts at round rounds // 2 |
| lazy | 1 | honest, but trains on 5% of its rows (declares those) |
| over_declarer | 1 | trains on 10% of its rows, declares 10x its rows |
| poisoner | 1 | trains on its shard with labels flipped to (label + 1) % classes |
| sybil | 3 | one honest update, trained once, submitted from each of its accounts |
| free_rider | 1 | the latest merge plus noise just above `no_update_tolerance`, 1,000,000 rows |
| rewind_copier | 1 | the latest merge plus 1 epoch on 16 rows, parent: its architecture |
| spammer | 6 | 5 random-weight updates and an exact copy of the latest merge, one per account |

The over-declarer, the sybil and the rewind-copier tell a lie on top of real work. Each has an
honest variant (`honest_variant=True`, from `MarketConfig.honest_variant`) doing the same work
without the lie, the counterfactual the figures measure the lie against: the over-declarer
declares the rows it trained on, the sybil acts from its first account only, the
rewind-copier names as its parent the merge it copied.

The spammer uses an account per submission: the task caps updates per account and round
(`max_submissions_per_round`, default 1), so a spammer that wants any of them judged splits
them over accounts, which costs it only a deposit each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from eth_account.signers.local import LocalAccount
from web3 import Web3

from marketplace.chain.client import ChainClient
from marketplace.dev.devnet import advance_chain_to
from marketplace.dev.shards import subset
from marketplace.protocol.tasks import nodes_by_id, read_spec
from marketplace.rules.dag import architecture_of
from marketplace.rules.datafiles import Dataset
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.runtime.connect import Connection
from marketplace.runtime.state import StateFile
from marketplace.storage.stores import BlobStore
from marketplace.wire.codec import encode_weights
from marketplace.wire.crypto import sha256
from miner.config import MinerConfig
from miner.parents import Waiting
from miner.submission import Submission
from miner.train_config import Progress, TrainConfig
from miner.trainer import Trainer, TrainResult
from miner.worker import Miner

if TYPE_CHECKING:
    import torch

FREE_RIDER_SAMPLES = 1_000_000
REWIND_ROWS = 16
SPAM_RANDOM = 5  # random-weight updates a round, plus one copy of the parent
# The data of an agent that never trains (a `Miner` takes a data source; it is never read).
PLACEHOLDER = Dataset(np.zeros((1, 1), np.float32), np.zeros(1, np.int64), 2)


@dataclass(frozen=True)
class Env:
    """The market the agents act in, and how honest miners train."""

    w3: Web3
    chain: ChainClient
    store: BlobStore
    folder: Path
    task_id: int
    rounds: int
    trainer: Trainer
    epochs: int
    learning_rate: float

    def miner(
        self,
        name: str,
        account: LocalAccount,
        data: Dataset,
        seed: int,
        architecture: int | None,
        trainer: Trainer | None = None,
    ) -> Miner:
        config = MinerConfig(
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            seed=seed,
            architecture=architecture,
        )
        return Miner(
            Connection(account, self.chain, self.store, int(self.w3.eth.chain_id)),
            trainer or self.trainer,
            data,
            StateFile(self.folder / "state" / f"{name}-{account.address}.json"),
            config,
        )

    def submit_round(self, miner: Miner) -> Submission | None:
        """`Miner.submit_round`; while it waits for the previous round's merge (none was
        posted), the clock moves to the end of the merge window first."""
        result = miner.submit_round(self.task_id)
        while isinstance(result, Waiting):
            advance_chain_to(self.w3, result.until)
            result = miner.submit_round(self.task_id)
        return result

    def latest(self, miner: Miner) -> tuple[int, ModelSpec, dict[str, torch.Tensor]]:
        """(node, architecture spec, weights) the miner would build on: the best merge of the
        latest round it can read, else its architecture."""
        spec = read_spec(self.chain, self.store, self.task_id)
        return miner.parents.choose(self.task_id, nodes_by_id(self.chain, self.task_id), spec)

    def architecture_of(self, node_id: int) -> int:
        return architecture_of(nodes_by_id(self.chain, self.task_id), node_id)


class Agent:
    """One participant: its name, its accounts (one `Miner` each) and its shard, if any."""

    kind: ClassVar[str]
    honest: ClassVar[bool] = False
    accounts_used: ClassVar[int] = 1
    needs_data: ClassVar[bool] = True
    has_honest_variant: ClassVar[bool] = False  # see the module docstring

    def __init__(
        self,
        name: str,
        env: Env,
        accounts: list[LocalAccount],
        shard: Dataset | None,
        seed: int,
        architecture: int,
        honest_variant: bool = False,
    ) -> None:
        self.name = name
        self.seed = seed
        self.shard = shard
        self.honest_variant = honest_variant and self.has_honest_variant
        self.accounts = self.acting(accounts)
        data = self.training_data(shard) if shard is not None else PLACEHOLDER
        trainer = self.trainer(env)  # one for all its accounts (the sybil's trains once)
        self.miners = [
            env.miner(name, account, data, seed, architecture, trainer) for account in self.accounts
        ]

    def acting(self, accounts: list[LocalAccount]) -> list[LocalAccount]:
        """The accounts it acts from, of those drawn for it."""
        return accounts

    def training_data(self, shard: Dataset) -> Dataset:
        return shard

    def trainer(self, env: Env) -> Trainer:
        return env.trainer

    def act(self, env: Env, round_index: int) -> list[Submission]:
        submitted = [env.submit_round(miner) for miner in self.miners]
        return [s for s in submitted if s is not None]


class Honest(Agent):
    kind = "honest"
    honest = True


class LateJoiner(Honest):
    kind = "late_joiner"

    def act(self, env: Env, round_index: int) -> list[Submission]:
        return super().act(env, round_index) if round_index >= env.rounds // 2 else []


class Lazy(Agent):
    kind = "lazy"

    def training_data(self, shard: Dataset) -> Dataset:
        return _fraction(shard, 0.05, self.seed)


class OverDeclarer(Agent):
    """Honest variant: the same training, declaring the rows it trained on."""

    kind = "over_declarer"
    has_honest_variant = True

    def training_data(self, shard: Dataset) -> Dataset:
        return _fraction(shard, 0.10, self.seed)

    def trainer(self, env: Env) -> Trainer:
        assert self.shard is not None
        if self.honest_variant:
            return env.trainer
        return Declaring(env.trainer, 10 * len(self.shard))


class Poisoner(Agent):
    kind = "poisoner"

    def training_data(self, shard: Dataset) -> Dataset:
        assert shard.num_classes is not None
        labels = (shard.labels + 1) % shard.num_classes
        labels.setflags(write=False)
        return Dataset(shard.features, labels, shard.num_classes)


class Sybil(Agent):
    """Three accounts, one shard: the same trained update submitted from each (the three
    miners build on the same merge with the same seed; `Memo` trains it once). Honest variant:
    its first account only (all three are drawn and funded, so nothing else changes)."""

    kind = "sybil"
    accounts_used = 3
    has_honest_variant = True

    def acting(self, accounts: list[LocalAccount]) -> list[LocalAccount]:
        return accounts[:1] if self.honest_variant else accounts

    def trainer(self, env: Env) -> Trainer:
        return Memo(env.trainer)


class FreeRider(Agent):
    kind = "free_rider"
    needs_data = False

    def act(self, env: Env, round_index: int) -> list[Submission]:
        miner = self.miners[0]
        parent, _, weights = env.latest(miner)
        spec = read_spec(env.chain, env.store, env.task_id)
        noisy = _noised(weights, spec.no_update_tolerance, self.seed * 1_000 + round_index)
        return [miner.submit_weights(env.task_id, noisy, parent, FREE_RIDER_SAMPLES)]


class RewindCopier(Agent):
    """Honest variant: the same training, naming the merge it copied as its parent."""

    kind = "rewind_copier"
    has_honest_variant = True

    def act(self, env: Env, round_index: int) -> list[Submission]:
        assert self.shard is not None
        miner = self.miners[0]
        parent, model, weights = env.latest(miner)
        rows = _rows(self.shard, REWIND_ROWS, self.seed + round_index)
        config = TrainConfig(
            epochs=1,
            batch_size=REWIND_ROWS,
            learning_rate=env.learning_rate,
            optimizer="adam",
            seed=self.seed + round_index,
        )
        trained = env.trainer.train(model, weights, rows, config)
        named = parent if self.honest_variant else env.architecture_of(parent)
        return [miner.submit_weights(env.task_id, trained.weights, named, len(rows))]


class Spammer(Agent):
    kind = "spammer"
    needs_data = False
    accounts_used = SPAM_RANDOM + 1

    def act(self, env: Env, round_index: int) -> list[Submission]:
        parent, model, weights = env.latest(self.miners[0])
        samples = 100
        sent = []
        for i, miner in enumerate(self.miners[:SPAM_RANDOM]):
            noise = init_weights(model, self.seed * 1_000 + round_index * SPAM_RANDOM + i)
            sent.append(miner.submit_weights(env.task_id, noise, parent, samples))
        sent.append(self.miners[SPAM_RANDOM].submit_weights(env.task_id, weights, parent, samples))
        return sent


KINDS: dict[str, type[Agent]] = {
    cls.kind: cls
    for cls in (
        Honest,
        LateJoiner,
        Lazy,
        OverDeclarer,
        Poisoner,
        Sybil,
        FreeRider,
        RewindCopier,
        Spammer,
    )
}
HONEST_KINDS = tuple(kind for kind, cls in KINDS.items() if cls.honest)
ADVERSARY_KINDS = tuple(kind for kind, cls in KINDS.items() if not cls.honest)
VARIANT_KINDS = tuple(kind for kind, cls in KINDS.items() if cls.has_honest_variant)


class Declaring(Trainer):
    """Trains as `inner` does and reports `samples` rows (what the miner declares)."""

    def __init__(self, inner: Trainer, samples: int) -> None:
        self.inner = inner
        self.samples = samples

    def train(
        self,
        spec: ModelSpec,
        weights: Mapping[str, torch.Tensor],
        dataset: Dataset,
        config: TrainConfig,
        progress: Progress | None = None,
    ) -> TrainResult:
        result = self.inner.train(spec, weights, dataset, config, progress)
        return dataclasses.replace(result, samples=self.samples)


class Memo(Trainer):
    """Trains as `inner` does, once per (spec, starting weights, config)."""

    def __init__(self, inner: Trainer) -> None:
        self.inner = inner
        self.done: dict[bytes, TrainResult] = {}

    def train(
        self,
        spec: ModelSpec,
        weights: Mapping[str, torch.Tensor],
        dataset: Dataset,
        config: TrainConfig,
        progress: Progress | None = None,
    ) -> TrainResult:
        key = sha256(
            encode_weights(weights)
            + spec.model_dump_json().encode()
            + config.model_dump_json().encode()
        )
        if key not in self.done:
            self.done[key] = self.inner.train(spec, weights, dataset, config, progress)
        return self.done[key]


def _fraction(shard: Dataset, fraction: float, seed: int) -> Dataset:
    return _rows(shard, max(1, round(fraction * len(shard))), seed)


def _rows(shard: Dataset, count: int, seed: int) -> Dataset:
    """`count` rows of the shard drawn at random (all of them if it has fewer)."""
    chosen = np.random.default_rng(seed).permutation(len(shard))[:count]
    return subset(shard, np.sort(chosen).astype(np.int64))


def _noised(
    weights: Mapping[str, torch.Tensor], tolerance: float, seed: int
) -> dict[str, torch.Tensor]:
    """`weights` plus Gaussian noise whose largest change is just above `tolerance` (after the
    float32 rounding), so the evaluator's no-update check lets it through."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    noise = {name: torch.randn(t.shape, generator=generator) for name, t in weights.items()}
    scale = 2 * max(tolerance, 1e-12)
    while True:
        noisy = {name: (t + scale * noise[name]).to(torch.float32) for name, t in weights.items()}
        if max(float((noisy[n] - weights[n]).abs().max()) for n in weights) > tolerance:
            return noisy
        scale *= 2


def kind_of(name: str) -> str:
    """The kind in an agent's name ("free_rider-1" -> "free_rider")."""
    return name.rsplit("-", 1)[0]
