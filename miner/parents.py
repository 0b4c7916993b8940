"""What a miner builds on: the parent it trains from (the best merge it can read, else an
architecture), whether to wait for the previous round's merge first, and the weights of either.

A merge counts once the task's quorum confirmed it and it opens for this miner (sealed to it,
intact, of an architecture that fits the task); anything else is skipped, never raised, so a
miner facing junk builds on the next best node. Architectures are read once per task and
remembered, as are those that do not open or fit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketplace.errors import BlobNotFound, ConfigError, SpecError
from marketplace.protocol.tasks import (
    MergeBundle,
    architecture_spec,
    miner_key,
    of_kind,
    open_merge,
)
from marketplace.protocol.verdicts import NODE_ERRORS
from marketplace.rules.dag import architecture_of
from marketplace.rules.evaluation import check_budget, check_schema_fits
from marketplace.rules.messages import NodeKind, NodeRecord, TaskSpec
from marketplace.rules.models import ModelSpec
from marketplace.runtime.connect import Connected, Connection
from marketplace.runtime.timing import Stopwatch
from marketplace.wire.crypto import sha256
from miner.config import MinerConfig
from miner.open_round import OpenRound

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """An open round this miner does not train for yet: the previous round's merge is due by
    `until`, the end of the round's merge window (marketplace.rules.schedule). The next pass looks
    again; from `until` on it trains on the best node it can read."""

    task_id: int
    round: int
    until: int  # chain time

    def __str__(self) -> str:
        previous = self.round - 1
        return f"round {self.round}: waiting for round {previous}'s merge (until {self.until})"


class ParentChooser(Connected):
    """Chooses and opens the nodes one miner builds on.

    Args:
        conn: the market and the miner's account; merges are sealed to its per-task key
            (envelopes are bound to the chain id).
        config: the configured parent, lineage or architecture, if any.
        watch: store reads are timed under "storage".
    """

    def __init__(
        self,
        conn: Connection,
        config: MinerConfig,
        watch: Stopwatch,
    ) -> None:
        super().__init__(conn)
        self.config = config
        self.watch = watch
        self._models: dict[tuple[int, int], ModelSpec] = {}  # (task, architecture) -> spec
        self._initial: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self._refused: dict[tuple[int, int], str] = {}  # architectures that do not open or fit
        self._quorums: dict[int, int] = {}

    def in_lineage(self, records: Mapping[int, NodeRecord], node_id: int) -> bool:
        """Whether `node_id` is of this miner's lineage (always, when it follows none)."""
        lineage = self.config.lineage
        return lineage is None or architecture_of(records, node_id) == lineage

    def merge_wait(self, current: OpenRound) -> Waiting | None:
        """`Waiting` while the open round is in its merge window and no merge of the
        round before, confirmed by the quorum, opens for this miner yet; else None (train now).

        The round race (docs/DESIGN.md): the contract takes round r - 1's merge only once round
        r has opened, so a miner that trained at once would build every round on an older node
        than the merge that is moments away. The wait is bounded by the window: after it, the
        miner builds on the best it can read. A configured parent never waits."""
        schedule, index = current.task.schedule, current.index
        if self.config.parent is not None or not schedule.in_merge_window(index, current.now):
            return None
        if self._readable_merges(current.task_id, current.records, current.spec, index - 1):
            return None
        return Waiting(current.task_id, index, schedule.merge_due(index))

    def choose(
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
            return self.weights_of(task_id, records, self.config.parent, spec)
        merges = [
            m for m in of_kind(records, NodeKind.MERGE) if self.in_lineage(records, m.node_id)
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
                return self.weights_of(task_id, records, wanted, spec)
            except NODE_ERRORS as exc:
                raise ConfigError(f"architecture {wanted} cannot be trained: {exc}") from None
        for architecture in of_kind(records, NodeKind.ARCHITECTURE):
            try:
                return self.weights_of(task_id, records, architecture.node_id, spec)
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
            if merge.round == round_index and self.in_lineage(records, merge.node_id)
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

    def weights_of(
        self, task_id: int, records: Mapping[int, NodeRecord], node_id: int, spec: TaskSpec
    ) -> tuple[int, ModelSpec, dict[str, torch.Tensor]]:
        """(`node_id`, its architecture's spec, its weights): an architecture's initial
        weights or a merge's that opens for this miner; ConfigError for anything else."""
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
