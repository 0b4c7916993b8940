"""The data owner's process: find the parent, train on private data, seal, upload, submit, claim.

`Miner` is Flower's client turned market participant. Each step is restartable: the chain says
what was submitted, claimed or refunded, and the state file remembers the one thing the chain
cannot, a sealed blob uploaded but not yet submitted (so a restart submits that blob instead of
training again). The private data only ever reaches `Trainer.train`: no blob, file or
transaction carries it, only weights sealed to the evaluators, a row count and, under DP, the
epsilon spent.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount

from marketplace.chain.client import ChainClient
from marketplace.errors import (
    BlobNotFound,
    ConfigError,
    DataFormatError,
    SpecError,
)
from marketplace.protocol.aggregation import (
    MIN_MEMBERS,
    Group,
    groups_of,
    round_groups,
    seal_delta,
    submission_verdict,
    submitted_members,
)
from marketplace.protocol.checks import NODE_ERRORS
from marketplace.protocol.tasks import (
    MergeBundle,
    architecture_spec,
    evaluator_keys,
    miner_key,
    nodes_by_id,
    of_kind,
    open_merge,
    read_spec,
    registered_keys,
)
from marketplace.rules.evaluation import Dataset, check_budget, check_schema_fits, load_dataset
from marketplace.rules.messages import Aggregation, NodeKind, NodeRecord, Phase, TaskSpec, TaskState
from marketplace.rules.models import ModelSpec
from marketplace.rules.rewards import architecture_of
from marketplace.runtime.faults import crash_point, pause_point
from marketplace.runtime.outage import OutageGuard
from marketplace.runtime.state import StateFile, write_bytes_atomically
from marketplace.runtime.timing import Stopwatch
from marketplace.storage.stores import BlobStore
from marketplace.wire.codec import encode_weights
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import seal
from marketplace.wire.secagg import mask_key, self_mask_key, submission_values
from miner.claims import collect
from miner.ledger import PrivacyLedger, fingerprint
from miner.trainer import DPConfig, Progress, TrainConfig, Trainer, TrainResult

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_DATA_BYTES = 1024 * 1024 * 1024
DATA_SUFFIXES = (".csv", ".npz")


def epsilon_millis(epsilon: object) -> int:
    """The DP spend as the chain records it: thousandths of epsilon, rounded up (never
    declaring less than was spent); 0 without DP."""
    return 0 if epsilon is None else math.ceil(float(str(epsilon)) * 1000)


class RoundStatus(StrEnum):
    """Where this miner's work on a round stands, as its state file keeps it (a restart
    resumes from it)."""

    JOINED = "joined"  # a secure aggregation round: joined on a base, not yet sealed
    NOT_AGGREGATED = "not aggregated"  # joined, but the round's group never formed
    SEALED = "sealed"  # trained and sealed, kept under state/sealed/ until uploaded
    UPLOADED = "uploaded"  # in the store, not yet submitted
    SUBMITTED = "submitted"


@dataclass(frozen=True)
class SeedReveal:
    """What revealing a round's mask seeds did: `line` says it, `revealed` if seeds went out."""

    revealed: bool
    line: str


@dataclass(frozen=True)
class MinerConfig:
    """How this data owner trains and what it builds on.

    Attributes:
        epochs, batch_size, learning_rate, optimizer: local training (miner.trainer).
        seed: training seed; each round trains with seed + round. With DP a fresh secret seed
            is drawn every round instead (the noise must not be reproducible by others).
        dp_epsilon, dp_delta, max_grad_norm: DP-SGD with Opacus when `dp_epsilon` is set.
        prox_mu: the weight of FedProx's proximal term (None: the task spec's `prox_mu`).
        architecture: the architecture to train when no merge is readable (None: the first).
        parent: always build on this node (None: the latest readable merge, else the
            architecture).
        lineage: train only this architecture's lineage, its latest readable merge or itself
            (None: the best merge of any). A data owner that trains every architecture runs
            one miner per lineage: the task's cap is per account and architecture.
    """

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    max_grad_norm: float = 1.0
    prox_mu: float | None = None
    architecture: int | None = None
    parent: int | None = None
    lineage: int | None = None

    def train_config(self, round_index: int, task_prox_mu: float = 0.0) -> TrainConfig:
        """The round's training config; `task_prox_mu`: the task spec's suggested `prox_mu`,
        used unless this config sets its own."""
        dp = None
        seed = self.seed + round_index
        if self.dp_epsilon is not None:
            dp = DPConfig(
                epsilon=self.dp_epsilon, delta=self.dp_delta, max_grad_norm=self.max_grad_norm
            )
            seed = secrets.randbits(62)
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,  # type: ignore[arg-type]  # checked by TrainConfig
            seed=seed,
            dp=dp,
            prox_mu=task_prox_mu if self.prox_mu is None else self.prox_mu,
        )


@dataclass(frozen=True)
class Waiting:
    """An open round this miner does not train for yet: the previous round's merge is due by
    `until`, the end of the round's merge window (marketplace.chain.schedule). The next pass looks
    again; from `until` on it trains on the best node it can read."""

    task_id: int
    round: int
    until: int  # chain time

    def __str__(self) -> str:
        previous = self.round - 1
        return f"round {self.round}: waiting for round {previous}'s merge (until {self.until})"


@dataclass(frozen=True)
class Submission:
    """One update this miner submitted (or found already submitted after a restart)."""

    task_id: int
    round: int
    node_id: int
    parent: int
    samples: int
    cid: str
    resumed: bool = False  # no training now: found on-chain, or a blob sealed or uploaded earlier
    found: bool = False  # it was already on-chain
    loss: float | None = None
    epsilon: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall time


class Miner:
    """One data owner taking part in tasks.

    Args:
        chain, store: the market.
        account: signs transactions and envelopes; derives the per-task encryption key.
        trainer: local training.
        data: the private data: a CSV or .npz file, a folder of them, or rows in memory.
        state: this miner's state file.
        chain_id: envelopes are bound to it.
        progress: called with (steps done, steps) while training.
        ledger: the privacy ledger each round's DP spend is recorded in (and refused by) first.
    """

    def __init__(
        self,
        chain: ChainClient,
        store: BlobStore,
        account: LocalAccount,
        trainer: Trainer,
        data: Path | Dataset,
        state: StateFile,
        chain_id: int,
        config: MinerConfig | None = None,
        progress: Progress | None = None,
        watch: Stopwatch | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        self.chain = chain
        self.store = store
        self.account = account
        self.address = str(account.address)
        self.trainer = trainer
        self.data = data
        self.state = state
        self.chain_id = chain_id
        self.config = config or MinerConfig()
        self.progress = progress
        self.watch = watch or Stopwatch()
        self.ledger = ledger
        self._models: dict[tuple[int, int], ModelSpec] = {}  # (task, architecture) -> spec
        self._initial: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self._refused: dict[tuple[int, int], str] = {}  # architectures that do not open or fit
        self._quorums: dict[int, int] = {}
        # (task, round) -> trained, base weights, download seconds: kept in memory between
        # training (a secure aggregation round's first half) and sealing (its second half).
        self._trained: dict[
            tuple[int, int], tuple[TrainResult, dict[str, torch.Tensor], float]
        ] = {}
        self._groups: dict[tuple[int, int], dict[int, Group]] = {}  # (task, round) -> groups
        self._waited: set[tuple[int, int]] = set()  # (task, round) said to wait for a merge

    # ------------------------------------------------------------------ one round

    def submit_round(self, task_id: int) -> Submission | Waiting | None:
        """Train and submit for the task's open round, once; None if no round is open (or,
        in a secure aggregation round, nothing is to be submitted yet).

        Returns the submission already on-chain if this miner submitted in this round before,
        and `Waiting`, without training, while the previous round's merge is due
        (`merge_wait`).
        """
        task = self.chain.task(task_id)
        now = self.chain.now()
        if self.chain.phase(task_id) is not Phase.ROUNDS or now < task.start:
            return None
        round_index = self.chain.current_round(task_id)
        records = nodes_by_id(self.chain, task_id)
        done = self._submitted(records, round_index)
        saved = self.state.section("tasks", task_id, "rounds", round_index)
        if done is not None:
            saved.update(status=RoundStatus.SUBMITTED, node_id=done.node_id)
            self.state.save()
            return Submission(
                task_id,
                round_index,
                done.node_id,
                done.parents[0],
                done.samples,
                done.cid,
                resumed=True,
                found=True,
            )
        spec = read_spec(self.chain, self.store, task_id)
        if saved.get("status") == RoundStatus.UPLOADED and self.store.has(saved["cid"]):
            log.info("task %d round %d: submitting the blob uploaded before", task_id, round_index)
            return self._submit(task_id, round_index, saved, resumed=True)
        sealed = self._sealed_blob(saved)
        if sealed is not None:
            log.info("task %d round %d: uploading the blob sealed before", task_id, round_index)
            self._upload(sealed, saved)
            return self._submit(task_id, round_index, saved, resumed=True)
        if spec.aggregates(round_index):
            return self._aggregate_round(task_id, task, round_index, records, spec, saved, now)
        waiting = self.merge_wait(task_id, task, round_index, records, spec, now)
        if waiting is not None:
            return waiting
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        parent, model_spec, weights = self.choose_parent(task_id, records, spec)
        seconds["download"] = time.perf_counter() - started
        result = self._train(task_id, round_index, model_spec, weights, spec)
        seconds["train"] = result.seconds
        started = time.perf_counter()
        blob = self._seal_update(task_id, spec, result.weights, parent)
        return self._keep_and_submit(
            task_id, round_index, saved, blob, parent, result, seconds, started
        )

    def submit_weights(
        self, task_id: int, weights: Mapping[str, torch.Tensor], parent: int, samples: int
    ) -> Submission:
        """Seal `weights` to the evaluators, upload them and submit them in the open round as
        an update of `parent` declaring `samples` rows: the path `submit_round` takes after
        training, with the weights, the parent and the row count chosen by the caller (the
        simulator's adversaries, scripts/simulation). Nothing is kept in the state file, so a
        restart does not resume it, and every call submits (the task's per-account cap
        judges the extra ones)."""
        spec = read_spec(self.chain, self.store, task_id)
        round_index = self.chain.current_round(task_id)
        blob = self._seal_update(task_id, spec, weights, parent)
        with self.watch.measure("storage"):
            cid = self.store.put(blob)
        sent: dict[str, object] = {
            "parent": parent,
            "samples": samples,
            "digest": sha256(blob).hex(),
            "cid": cid,
        }
        return self._submit(task_id, round_index, sent, resumed=False)

    def _seal_update(
        self, task_id: int, spec: TaskSpec, weights: Mapping[str, torch.Tensor], parent: int
    ) -> bytes:
        """`weights` as an update of `parent`, sealed to the task's evaluators."""
        return seal(
            encode_weights(weights),
            evaluator_keys(spec),
            self.account,
            task_id=task_id,
            parent=parent,
            kind="update",
            chain_id=self.chain_id,
        )

    def _train(
        self,
        task_id: int,
        round_index: int,
        model_spec: ModelSpec,
        weights: dict[str, torch.Tensor],
        spec: TaskSpec,
    ) -> TrainResult:
        """Train on the private data, the round's DP spend recorded in the ledger first."""
        dataset = self._dataset(spec)
        spend = self._reserve_privacy(task_id, round_index)
        config = self.config.train_config(round_index, spec.prox_mu)
        result = self.trainer.train(model_spec, weights, dataset, config, self.progress)
        if spend is not None and self.ledger is not None and result.epsilon is not None:
            self.ledger.settle(*spend, result.epsilon)
        return result

    def _keep_and_submit(
        self,
        task_id: int,
        round_index: int,
        saved: dict[str, object],
        blob: bytes,
        parent: int,
        result: TrainResult,
        seconds: dict[str, float],
        started: float,
    ) -> Submission:
        """Keep the sealed blob on disk, upload it and submit it (`started`: when sealing began)."""
        digest = sha256(blob).hex()
        # Kept on disk until it is uploaded, so an IPFS outage or a kill costs no retraining.
        write_bytes_atomically(self._sealed_path(digest), blob)
        saved.update(
            status=RoundStatus.SEALED,
            digest=digest,
            parent=parent,
            samples=result.samples,
            loss=result.loss,
            epsilon=result.epsilon,
        )
        self.state.save()
        seconds["seal"] = time.perf_counter() - started
        started = time.perf_counter()
        self._upload(blob, saved)
        seconds["upload"] = time.perf_counter() - started
        submission = self._submit(task_id, round_index, saved, resumed=False)
        seconds["submit"] = submission.seconds["submit"]
        return replace(submission, loss=result.loss, epsilon=result.epsilon, seconds=seconds)

    def _aggregate_round(
        self,
        task_id: int,
        task: TaskState,
        round_index: int,
        records: Mapping[int, NodeRecord],
        spec: TaskSpec,
        saved: dict[str, object],
        now: int,
    ) -> Submission | Waiting | None:
        """A secure aggregation round (marketplace.protocol.aggregation): join in its first half,
        once the previous round's merge is readable or its merge window has passed, and train
        meanwhile; once the masked set is fixed at the midpoint, seal the delta against it,
        upload and submit. None while there is nothing to submit yet (or at all)."""
        aggregation = spec.aggregation
        assert aggregation is not None
        midpoint = task.schedule.midpoint(round_index)
        key = miner_key(self.account, task_id)
        joins = self.chain.round_joins(task_id, round_index)
        mine = [e for e in joins if e.account.lower() == self.address.lower()]
        if mine:
            base = mine[0].base
        elif now >= midpoint:
            log.info("task %d round %d: joined too late; the masks are fixed", task_id, round_index)
            return None
        else:
            waiting = self.merge_wait(task_id, task, round_index, records, spec, now)
            if waiting is not None:
                return waiting
            base, _, _ = self.choose_parent(task_id, records, spec)
            with self.watch.measure("chain"):
                self.chain.join_round(self.address, task_id, base, key.public_bytes)
            saved.update(status=RoundStatus.JOINED, base=base)
            self.state.save()
            log.info(
                "task %d round %d: joined the aggregation on node %d", task_id, round_index, base
            )
        trained = self._trained.get((task_id, round_index))
        if trained is None:
            started = time.perf_counter()
            _, model_spec, base_weights = self._weights_of(task_id, records, base, spec)
            download = time.perf_counter() - started
            result = self._train(task_id, round_index, model_spec, base_weights, spec)
            trained = self._trained[(task_id, round_index)] = (result, base_weights, download)
        if now < midpoint:
            return None  # who else is in the round is known at the midpoint
        groups = groups_of(
            joins, self.chain_id, self.chain.address, task_id, round_index, aggregation.max_miners
        )
        self._groups[(task_id, round_index)] = groups  # final: nobody joins after the midpoint
        group = groups.get(base)
        if group is None or group.index_of(self.address) is None or not group.viable:
            admitted = group is not None and group.index_of(self.address) is not None
            why = "alone in the group: its sum would be this update" if admitted else "full"
            log.info("task %d round %d: not submitting (%s)", task_id, round_index, why)
            saved.update(status=RoundStatus.NOT_AGGREGATED)
            self.state.save()
            return None
        result, base_weights, download = trained
        started = time.perf_counter()
        blob = seal_delta(
            result.weights, base_weights, aggregation, key.private_key, group, self.address
        )
        seconds = {"download": download, "train": result.seconds}
        submission = self._keep_and_submit(
            task_id, round_index, saved, blob, base, result, seconds, started
        )
        del self._trained[(task_id, round_index)]
        return submission

    def reveal_masks(self, task_id: int) -> list[str]:
        """After each secure aggregation round this miner's submission counted in: reveal its
        own mask key and its mask keys with the members that did not submit, once, so the key
        holder can open the group's sum (marketplace.protocol.aggregation). What it did, as
        lines."""
        spec = read_spec(self.chain, self.store, task_id)
        aggregation = spec.aggregation
        if aggregation is None:
            return []
        task = self.chain.task(task_id)
        now = self.chain.now()
        pending = [  # closed aggregate rounds this miner submitted to and has not settled
            r
            for r in range(task.rounds)
            if spec.aggregates(r)
            and task.round_end(r) <= now
            and self.state.section("tasks", task_id, "rounds", r).get("status")
            == RoundStatus.SUBMITTED
            and self.state.section("tasks", task_id, "rounds", r).get("seeds") is None
        ]
        if not pending:
            return []
        records = nodes_by_id(self.chain, task_id)
        done = []
        for record in of_kind(records, NodeKind.UPDATE):
            mine = record.author.lower() == self.address.lower()
            if not (mine and record.round in pending):
                continue
            saved = self.state.section("tasks", task_id, "rounds", record.round)
            if saved.get("seeds") is not None:
                continue
            reveal = self._reveal_for(task_id, record, records, aggregation, spec)
            saved["seeds"] = reveal.line  # settled, whatever it said: not looked at again
            self.state.save()
            if reveal.revealed:
                done.append(f"round {record.round}: {reveal.line}")
        return done

    def _reveal_for(
        self,
        task_id: int,
        record: NodeRecord,
        records: Mapping[int, NodeRecord],
        aggregation: Aggregation,
        spec: TaskSpec,
    ) -> SeedReveal:
        groups = self._groups.get((task_id, record.round)) or round_groups(
            self.chain, self.chain_id, task_id, record.round, aggregation.max_miners
        )
        group = groups.get(record.parents[0])
        own = None if group is None else group.index_of(self.address)
        if group is None or own is None:
            return SeedReveal(False, "not a member")
        already = [
            e
            for e in self.chain.seed_reveals(task_id, record.round)
            if e.account.lower() == self.address.lower()
        ]
        if already:
            return SeedReveal(True, "revealed before")
        count = submission_values(self.store.get(record.cid, spec.max_blob_bytes))
        submitted = submitted_members(
            group,
            records,
            lambda node_id: submission_verdict(
                records[node_id],
                records,
                group,
                self.store,
                aggregation,
                count,
                spec.max_blob_bytes,
            ),
        )
        if own not in submitted:
            return SeedReveal(False, "this submission did not count: its own mask stays secret")
        if len(submitted) < MIN_MEMBERS:
            return SeedReveal(False, "too few submitted: revealing would expose this update")
        dropped = [i for i in range(len(group.members)) if i not in submitted]
        key = miner_key(self.account, task_id).private_key
        context = group.masked.context
        seeds = [self_mask_key(key, context)]
        seeds += [mask_key(key, group.masked.keys[i], context) for i in dropped]
        with self.watch.measure("chain"):
            self.chain.reveal_mask_seeds(self.address, task_id, record.round, group.base, seeds)
        return SeedReveal(True, f"revealed its mask seeds (drop-outs: {len(dropped)})")

    def _sealed_path(self, digest: str) -> Path:
        return self.state.path.parent / "sealed" / f"{digest}.blob"

    def _sealed_blob(self, saved: Mapping[str, object]) -> bytes | None:
        """The sealed update kept for an upload that did not happen, if it is intact."""
        if saved.get("status") != RoundStatus.SEALED:
            return None
        path = self._sealed_path(str(saved["digest"]))
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        return blob if sha256(blob).hex() == saved["digest"] else None

    def _upload(self, blob: bytes, saved: dict[str, object]) -> None:
        pause_point("miner:uploading")
        with self.watch.measure("storage"):
            cid = self.store.put(blob)
        saved.update(status=RoundStatus.UPLOADED, cid=cid)
        self.state.save()
        self._sealed_path(str(saved["digest"])).unlink(missing_ok=True)
        crash_point("miner:uploaded")

    def _submit(
        self, task_id: int, round_index: int, saved: dict[str, object], resumed: bool
    ) -> Submission:
        started = time.perf_counter()
        key = miner_key(self.account, task_id)
        registered = registered_keys(self.chain, task_id).get(self.address)
        result = self.chain.submit_update(
            self.address,
            task_id,
            parent=int(str(saved["parent"])),
            samples=int(str(saved["samples"])),
            digest=bytes.fromhex(str(saved["digest"])),
            cid=str(saved["cid"]),
            encryption_key=bytes(32) if registered == key.public_bytes else key.public_bytes,
            epsilon_millis=epsilon_millis(saved.get("epsilon")),
        )
        assert result.value is not None
        saved.update(status=RoundStatus.SUBMITTED, node_id=result.value)
        self.state.save()
        crash_point("miner:submitted")
        log.info("task %d round %d: submitted node %d", task_id, round_index, result.value)
        return Submission(
            task_id,
            round_index,
            result.value,
            int(str(saved["parent"])),
            int(str(saved["samples"])),
            str(saved["cid"]),
            resumed,
            seconds={"submit": time.perf_counter() - started},
        )

    def _submitted(self, records: Mapping[int, NodeRecord], round_index: int) -> NodeRecord | None:
        for record in records.values():
            if (
                record.kind is NodeKind.UPDATE
                and record.round == round_index
                and record.author.lower() == self.address.lower()
                and self._in_lineage(records, record.node_id)
            ):
                return record
        return None

    def _in_lineage(self, records: Mapping[int, NodeRecord], node_id: int) -> bool:
        """Whether `node_id` is of this miner's lineage (always, when it follows none)."""
        lineage = self.config.lineage
        return lineage is None or architecture_of(records, node_id) == lineage

    # ------------------------------------------------------------------ the parent

    def merge_wait(
        self,
        task_id: int,
        task: TaskState,
        round_index: int,
        records: Mapping[int, NodeRecord],
        spec: TaskSpec,
        now: int,
    ) -> Waiting | None:
        """`Waiting` while round `round_index` is in its merge window and no merge of the
        round before, confirmed by the quorum, opens for this miner yet; else None (train now).

        The round race (docs/DESIGN.md): the contract takes round r - 1's merge only once round
        r has opened, so a miner that trained at once would build every round on an older node
        than the merge that is moments away. The wait is bounded by the window: after it, the
        miner builds on the best it can read. A configured parent never waits."""
        schedule = task.schedule
        if self.config.parent is not None or not schedule.in_merge_window(round_index, now):
            return None
        if self._readable_merges(task_id, records, spec, round_index - 1):
            return None
        return Waiting(task_id, round_index, schedule.merge_due(round_index))

    def choose_parent(
        self, task_id: int, records: Mapping[int, NodeRecord], spec: TaskSpec
    ) -> tuple[int, ModelSpec, dict[str, torch.Tensor]]:
        """(parent id, its architecture's spec, its weights).

        The configured parent, else the best-scoring merge of the latest round this miner can
        read (the evaluator's round score, sealed inside the merge; of its lineage's
        architecture if it follows one), else that architecture or the configured one, else
        the first one that opens and fits the task (junk is skipped).
        Only the latest round with a readable merge is opened.
        """
        if self.config.parent is not None:
            return self._weights_of(task_id, records, self.config.parent, spec)
        merges = [
            m for m in of_kind(records, NodeKind.MERGE) if self._in_lineage(records, m.node_id)
        ]
        for round_index in sorted({m.round for m in merges}, reverse=True):
            opened = self._readable_merges(task_id, records, spec, round_index)
            if opened:
                node_id, bundle = max(opened, key=lambda item: (item[1].round_score, -item[0]))
                _, model = self._architecture(task_id, records, node_id, spec)
                return node_id, model, bundle.weights
        wanted = self.config.lineage or self.config.architecture
        if wanted is not None:
            if wanted not in records or records[wanted].kind is not NodeKind.ARCHITECTURE:
                raise ConfigError(f"node {wanted} of task {task_id} is not an architecture")
            try:
                return self._weights_of(task_id, records, wanted, spec)
            except NODE_ERRORS as exc:
                raise ConfigError(f"architecture {wanted} cannot be trained: {exc}") from None
        for architecture in of_kind(records, NodeKind.ARCHITECTURE):
            try:
                return self._weights_of(task_id, records, architecture.node_id, spec)
            except NODE_ERRORS as exc:
                log.info("architecture %d skipped: %s", architecture.node_id, exc)
        raise ConfigError(f"task {task_id} has no architecture this miner can train yet")

    def _readable_merges(
        self, task_id: int, records: Mapping[int, NodeRecord], spec: TaskSpec, round_index: int
    ) -> list[tuple[int, MergeBundle]]:
        """(node id, plaintext) of every merge of round `round_index` that opens for this
        miner (`_open_merge`)."""
        return [
            (merge.node_id, bundle)
            for merge in of_kind(records, NodeKind.MERGE)
            if merge.round == round_index and self._in_lineage(records, merge.node_id)
            for bundle in [self._open_merge(task_id, records, merge, spec)]
            if bundle is not None
        ]

    def _open_merge(
        self, task_id: int, records: Mapping[int, NodeRecord], merge: NodeRecord, spec: TaskSpec
    ) -> MergeBundle | None:
        """The merge's plaintext if it is confirmed, readable and sealed to this miner, else
        None: a blob the store does not give (missing, too large, not its CID) is skipped like
        one that does not open, so the miner builds on another merge or the architecture. An
        unreachable store still raises: the pass waits for it (`OutageGuard`)."""
        if self._confirmations(task_id, merge.node_id) < self._quorum(task_id):
            return None
        cap = spec.max_blob_bytes
        try:  # one pass: a merge not sealed to this miner fails here like a tampered one
            with self.watch.measure("storage"):
                blob = self.store.get(merge.cid, cap)
            if sha256(blob) != merge.digest:
                return None
            _, model = self._architecture(task_id, records, merge.node_id, spec)
            return open_merge(
                merge, blob, miner_key(self.account, task_id), model, cap, self.chain_id
            )
        except NODE_ERRORS as exc:  # StoreUnavailable propagates: the outage guard waits
            log.info("merge %d does not open for this miner: %s", merge.node_id, exc)
            return None

    def _quorum(self, task_id: int) -> int:
        if task_id not in self._quorums:
            self._quorums[task_id] = self.chain.task(task_id).quorum  # immutable
        return self._quorums[task_id]

    def _weights_of(
        self, task_id: int, records: Mapping[int, NodeRecord], node_id: int, spec: TaskSpec
    ) -> tuple[int, ModelSpec, dict[str, torch.Tensor]]:
        if node_id not in records:
            raise ConfigError(f"task {task_id} has no node {node_id}")
        record = records[node_id]
        if record.kind is NodeKind.ARCHITECTURE:
            arch_id, model = self._architecture(task_id, records, node_id, spec)
            return node_id, model, self._initial[(task_id, arch_id)]
        if record.kind is not NodeKind.MERGE:
            raise ConfigError(f"node {node_id} is an update: only evaluators can read it")
        bundle = self._open_merge(task_id, records, record, spec)
        if bundle is None:
            raise ConfigError(f"merge {node_id} is not sealed to this miner (or not confirmed)")
        _, model = self._architecture(task_id, records, node_id, spec)
        return node_id, model, bundle.weights

    def _architecture(
        self, task_id: int, records: Mapping[int, NodeRecord], node_id: int, spec: TaskSpec
    ) -> tuple[int, ModelSpec]:
        """(id, spec) of the architecture under `node_id`; its bundle is read once per task.

        Raises one of `NODE_ERRORS` (remembered) if it does not open or fit the task."""
        arch_id = architecture_of(records, node_id)
        key = (task_id, arch_id)
        if key in self._refused:
            raise SpecError(f"architecture {arch_id}: {self._refused[key]}")
        if key not in self._initial:
            try:
                with self.watch.measure("storage"):
                    _, model, initial = architecture_spec(
                        records, node_id, self.store, spec.max_blob_bytes
                    )
                check_schema_fits(model, spec.data, spec.metric)
                check_budget(model, spec)  # over it, the evaluators refuse it unscored
            except NODE_ERRORS as exc:
                if not isinstance(exc, BlobNotFound):  # IPFS may still find it later
                    self._refused[key] = str(exc)
                raise
            self._models[key] = model
            self._initial[key] = initial
        return arch_id, self._models[key]

    def _confirmations(self, task_id: int, node_id: int) -> int:
        return bin(self.chain.node(task_id, node_id).confirmations).count("1")

    def _reserve_privacy(self, task_id: int, round_index: int) -> tuple[str, str] | None:
        """Record this round's DP spend in the ledger before training, or refuse the round
        (PrivacyBudgetExceeded); the (dataset, submission) it was recorded under."""
        if self.ledger is None:
            return None
        dataset = fingerprint(self.data)
        key = f"chain {self.chain_id} {self.chain.address} task {task_id} round {round_index}"
        if self.config.lineage is not None:  # one spend per model trained on the data
            key += f" lineage {self.config.lineage}"
        self.ledger.reserve(dataset, key, self.config.dp_epsilon, self.config.dp_delta)
        return dataset, key

    def _dataset(self, spec: TaskSpec) -> Dataset:
        if isinstance(self.data, Dataset):
            return self.data
        return load_private_data(self.data, spec)

    # ------------------------------------------------------------------ getting paid

    def collect(self, task_id: int) -> list[str]:
        """Claim this miner's payout, or its refunds; what it did, as lines (`claims.collect`)."""
        return collect(self.chain, self.store, self.address, self.state, task_id)

    def finished(self, task_id: int) -> bool:
        """Whether there is nothing left to do for the task."""
        phase = self.chain.phase(task_id)
        if phase in (Phase.CLOSED, Phase.CANCELLED):
            return True
        return "claimed" in self.state.section("tasks", task_id)

    def run(
        self,
        task_id: int,
        poll_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
        on_event: Callable[[str], None] = log.info,
        outage_seconds: float = 300.0,
    ) -> None:
        """Take part in every round of the task, then collect; returns when nothing is left.

        An Ethereum or IPFS node that stops answering is waited for (`outage_seconds`)."""
        guard = OutageGuard(outage_seconds, on_event)
        while not guard.attempt(lambda: self._pass(task_id, on_event)):
            sleep(poll_seconds)

    def _pass(self, task_id: int, on_event: Callable[[str], None]) -> bool:
        """One look at the task: submit if a round is open (or say, once, that it waits for the
        previous round's merge: the next pass looks again), collect if owed; whether done."""
        if self.finished(task_id):
            return True
        for line in self.reveal_masks(task_id):
            on_event(line)
        submission = self.submit_round(task_id)
        if isinstance(submission, Waiting):
            if (task_id, submission.round) not in self._waited:  # said once, not every poll
                self._waited.add((task_id, submission.round))
                on_event(str(submission))
        elif submission is not None and not submission.found:
            on_event(
                f"round {submission.round}: submitted node {submission.node_id} "
                f"(parent {submission.parent}, {submission.samples} rows)"
            )
        for line in self.collect(task_id):
            on_event(line)
        return self.finished(task_id)


def load_private_data(path: Path, spec: TaskSpec) -> Dataset:
    """The miner's rows: one CSV/.npz file, or every such file of a folder, in name order."""
    import numpy as np

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
        if not files:
            raise DataFormatError(f"{path} holds no .csv or .npz file")
    else:
        files = [path]
    parts = [load_dataset(file, spec.data, MAX_DATA_BYTES) for file in files]
    if len(parts) == 1:
        return parts[0]
    features = np.concatenate([p.features for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    features.setflags(write=False)
    labels.setflags(write=False)
    return Dataset(features, labels, spec.data.num_classes)
