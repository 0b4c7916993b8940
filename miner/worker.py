"""The data owner's process: find the parent, train on private data, seal, upload, submit, claim.

`Miner` is Flower's client turned market participant: it runs each round's steps in order and
trains; the steps are owned next door: what to build on (miner.parents), the update's way out
(miner.submission), secure aggregation rounds (miner.secure_rounds), what a restart resumes
(miner.saved_rounds) and getting paid (miner.claims). Each step is restartable: the chain says
what was submitted, claimed or refunded, and the state file remembers the one thing the chain
cannot, a sealed blob uploaded but not yet submitted (so a restart submits that blob instead of
training again). The private data only ever reaches `Trainer.train`: no blob, file or
transaction carries it, only weights sealed to the evaluators, a row count and, under DP, the
epsilon spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from marketplace.errors import DataFormatError
from marketplace.protocol.tasks import (
    nodes_by_id,
    read_spec,
)
from marketplace.rules.datafiles import Dataset, load_dataset
from marketplace.rules.messages import NodeKind, NodeRecord, Phase, TaskSpec
from marketplace.rules.models import ModelSpec
from marketplace.runtime.connect import Connected, Connection
from marketplace.runtime.outage import OutageGuard
from marketplace.runtime.state import StateFile
from marketplace.runtime.timing import Stopwatch
from miner.claims import collect
from miner.config import MinerConfig
from miner.ledger import PrivacyLedger, fingerprint
from miner.open_round import OpenRound
from miner.parents import ParentChooser, Waiting
from miner.saved_rounds import RoundStatus, SavedRounds
from miner.secure_rounds import Joined, SecureRounds
from miner.submission import Submission, Submitter
from miner.train_config import Progress
from miner.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_DATA_BYTES = 1024 * 1024 * 1024
DATA_SUFFIXES = (".csv", ".npz")


class Miner(Connected):
    """One data owner taking part in tasks.

    Args:
        conn: the market (chain, store, chain id) and the account that signs transactions and
            envelopes and derives the per-task encryption key.
        trainer: local training.
        data: the private data: a CSV or .npz file, a folder of them, or rows in memory.
        state: this miner's state file.
        progress: called with (steps done, steps) while training.
        ledger: the privacy ledger each round's DP spend is recorded in (and refused by) first.
    """

    def __init__(
        self,
        conn: Connection,
        trainer: Trainer,
        data: Path | Dataset,
        state: StateFile,
        config: MinerConfig | None = None,
        progress: Progress | None = None,
        watch: Stopwatch | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        super().__init__(conn)
        self.trainer = trainer
        self.data = data
        self.state = state
        self.progress = progress
        self.watch = watch or Stopwatch()
        self.ledger = ledger
        self.rounds = SavedRounds(state)
        config = config or MinerConfig()
        self.parents = ParentChooser(conn, config, self.watch)
        self.submitter = Submitter(conn, self.rounds, self.watch)
        self.secure = SecureRounds(conn, self.rounds, self.parents, self.watch)
        # (task, round) -> trained, base weights, download seconds: kept in memory between
        # training (a secure aggregation round's first half) and sealing (its second half).
        self._trained: dict[
            tuple[int, int], tuple[TrainResult, dict[str, torch.Tensor], float]
        ] = {}
        self._waited: set[tuple[int, int]] = set()  # (task, round) said to wait for a merge

    @property
    def config(self) -> MinerConfig:
        """How this miner trains and what it builds on: one config, which the parent chooser
        reads too (so setting it reconfigures both)."""
        return self.parents.config

    @config.setter
    def config(self, config: MinerConfig) -> None:
        self.parents.config = config

    # ------------------------------------------------------------------ one round

    def submit_round(self, task_id: int) -> Submission | Waiting | None:
        """Train and submit for the task's open round, once; None if no round is open (or,
        in a secure aggregation round, nothing is to be submitted yet).

        Returns the submission already on-chain if this miner submitted in this round before,
        and `Waiting`, without training, while the previous round's merge is due
        (`ParentChooser.merge_wait`).
        """
        task = self.chain.task(task_id)
        now = self.chain.now()
        if self.chain.phase(task_id) is not Phase.ROUNDS or now < task.start:
            return None
        round_index = self.chain.current_round(task_id)
        records = nodes_by_id(self.chain, task_id)
        done = self._submitted(records, round_index)
        saved = self.rounds.section(task_id, round_index)
        if done is not None:
            self.rounds.mark(saved, RoundStatus.SUBMITTED, node_id=done.node_id)
            return Submission.found_on_chain(task_id, round_index, done)
        spec = read_spec(self.chain, self.store, task_id)
        resumed = self.submitter.resume(task_id, round_index, saved)
        if resumed is not None:
            return resumed
        current = OpenRound(task_id, task, round_index, records, spec, now)
        if spec.aggregates(round_index):
            return self._aggregate_round(current, saved)
        waiting = self.parents.merge_wait(current)
        if waiting is not None:
            return waiting
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        parent, model_spec, weights = self.parents.choose(task_id, records, spec)
        seconds["download"] = time.perf_counter() - started
        result = self._train(task_id, round_index, model_spec, weights, spec)
        seconds["train"] = result.seconds
        started = time.perf_counter()
        blob = self.submitter.seal(task_id, spec, result.weights, parent)
        return self.submitter.send(
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
        blob = self.submitter.seal(task_id, spec, weights, parent)
        return self.submitter.send_unsaved(task_id, round_index, blob, parent, samples)

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

    def _aggregate_round(
        self, current: OpenRound, saved: dict[str, object]
    ) -> Submission | Waiting | None:
        """A secure aggregation round (marketplace.protocol.aggregation): join in its first half
        (`SecureRounds.join`) and train meanwhile; once the masked set is fixed at the midpoint,
        seal the delta against it, upload and submit. None while there is nothing to submit yet
        (or at all)."""
        task_id, round_index, spec = current.task_id, current.index, current.spec
        aggregation = spec.aggregation
        assert aggregation is not None
        joined = self.secure.join(current, saved)
        if not isinstance(joined, Joined):
            return joined
        trained = self._trained.get((task_id, round_index))
        if trained is None:
            started = time.perf_counter()
            _, model_spec, base_weights = self.parents.weights_of(
                task_id, current.records, joined.base, spec
            )
            download = time.perf_counter() - started
            result = self._train(task_id, round_index, model_spec, base_weights, spec)
            trained = self._trained[(task_id, round_index)] = (result, base_weights, download)
        if current.now < current.task.schedule.midpoint(round_index):
            return None  # who else is in the round is known at the midpoint
        group = self.secure.group(task_id, round_index, joined, aggregation, saved)
        if group is None:
            return None
        result, base_weights, download = trained
        started = time.perf_counter()
        blob = self.secure.seal(task_id, group, result.weights, base_weights, aggregation)
        seconds = {"download": download, "train": result.seconds}
        submission = self.submitter.send(
            task_id, round_index, saved, blob, joined.base, result, seconds, started
        )
        del self._trained[(task_id, round_index)]
        return submission

    def _submitted(self, records: Mapping[int, NodeRecord], round_index: int) -> NodeRecord | None:
        for record in records.values():
            if (
                record.kind is NodeKind.UPDATE
                and record.round == round_index
                and record.author.lower() == self.address.lower()
                and self.parents.in_lineage(records, record.node_id)
            ):
                return record
        return None

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
        return collect(self.conn, self.state, task_id)

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
        for line in self.secure.reveal_masks(task_id):
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
