"""The evaluators' judgement, with no account: a task's nodes decided and scored.

A `Scorer` reads the chain, the store and what is sealed to its X25519 key; it signs and posts
nothing. It keeps, per task, the `TaskView` (the node list, each node's verdict, the scores) and,
across tasks, one score per model, dataset and weights, so each model is run once. The evaluator
process (`marketplace.roles.evaluator`) holds one and posts what it finds; `verify` builds one
with the verifier's key and compares what it finds with the posted reports. What settlement
replays from a scorer's scores besides each node's (coalition and added scores) is
`marketplace.roles.coalitions`'; a round's merge computed from them, `marketplace.roles.merging`'.

Verdicts: an architecture by `checks.check_architecture`; an update in clear by
`checks.check_update` (the per-round cap first, unread, then the copy rule: one update, one
voice); a merge by opening its posted blob; a secure aggregation update by
`aggregation.submission_verdict`. Bytes that pass their checks and fail on use (`NODE_ERRORS`)
make the node invalid with the reason, never an exception out of the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from marketplace.chain.client import ChainClient
from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    DataFormatError,
    EnvelopeError,
    IntegrityError,
    ScoringTimeout,
    SpecError,
    StorageError,
    ValidationUnavailable,
    WeightsError,
)
from marketplace.protocol.aggregation import Group, round_groups, submission_verdict, value_count
from marketplace.protocol.checks import check_architecture, check_update
from marketplace.protocol.tasks import (
    MergeBundle,
    nodes_by_id,
    open_merge,
    open_validation,
    read_spec,
    validation_file,
)
from marketplace.protocol.verdicts import NODE_ERRORS, Refusal, Verdict, refusal
from marketplace.rules.dag import architecture_of, updates_by
from marketplace.rules.datafiles import Dataset, load_validation
from marketplace.rules.evaluation import Clock, Scores, scores
from marketplace.rules.messages import NodeKind, NodeRecord, Score, TaskSpec
from marketplace.rules.models import ModelSpec
from marketplace.runtime.timing import Stopwatch
from marketplace.storage.stores import BlobStore
from marketplace.wire.codec import arrays_digest, to_arrays, to_tensors, weights_digest
from marketplace.wire.crypto import sha256
from marketplace.wire.keys import X25519KeyPair

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class TaskView:
    """What the scorer knows of one task while it works on it (rebuilt after a restart)."""

    spec: TaskSpec
    records: dict[int, NodeRecord]
    architectures: dict[int, ModelSpec] = field(default_factory=dict)
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    groups: dict[int, dict[int, Group]] = field(default_factory=dict)  # round -> base -> group
    first_with: dict[bytes, int] = field(default_factory=dict)  # weights digest -> first update
    checked_below: int = 1  # every update in clear with a smaller id has its verdict
    scores: dict[tuple[int, bytes], int] = field(default_factory=dict)  # (node, dataset digest)


class Scorer:
    """Decides and scores a task's nodes on what its key can read; needs no account.

    Args:
        chain, store: the market.
        key: the X25519 key that reads sealed blobs (an evaluator's `account_key`, a miner's
            task key, or any key: what is not sealed to it is not read).
        chain_id: envelopes are bound to it.
        clock: times each scoring against the task's `scoring_seconds` (tests pass a fake).
    """

    def __init__(
        self,
        chain: ChainClient,
        store: BlobStore,
        key: X25519KeyPair,
        chain_id: int,
        watch: Stopwatch | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.chain = chain
        self.store = store
        self.key = key
        self.chain_id = chain_id
        self.watch = watch or Stopwatch()
        self.clock = clock
        self._views: dict[int, TaskView] = {}
        self._validation: dict[int, Dataset] = {}
        self._sealed_files: dict[int, bytes] = {}  # task -> its validation file, as sealed
        self.check_seconds: dict[int, float] = {}  # node id -> time to fetch, open and check it
        self.scorings = 0  # models run on a validation set, over this scorer's life
        # (model, dataset digest, weights digest) -> score: a round's scorings (sealed set) are
        # settlement's too (the revealed set is the same file), and each round's frontier is
        # scored once, so the work per round is the round's new nodes, not the tree.
        self._scores: dict[tuple[ModelSpec, bytes, bytes], Scores] = {}

    # ------------------------------------------------------------------ the task and its files

    def view(self, task_id: int) -> TaskView:
        """The task as this scorer knows it, its node list read again from the chain."""
        with self.watch.measure("chain"):
            records = nodes_by_id(self.chain, task_id)
        view = self._views.get(task_id)
        if view is None:
            view = self._views[task_id] = TaskView(read_spec(self.chain, self.store, task_id), {})
        view.records = records
        return view

    def architecture(self, view: TaskView, arch_id: int) -> ModelSpec:
        """The spec of a valid architecture (SpecError, with its reason, for an invalid one:
        nothing is ever built, merged or scored on it)."""
        verdict = self.verdict(view, arch_id)
        if arch_id not in view.architectures:
            raise SpecError(f"architecture {arch_id} is invalid ({verdict.reason})")
        return view.architectures[arch_id]

    def sealed_validation(self, task_id: int, spec: TaskSpec) -> Dataset:
        if task_id not in self._validation:
            file = self._sealed_file(task_id, spec)
            self._validation[task_id] = load_dataset(file, spec, "the sealed validation file")
        return self._validation[task_id]

    def _sealed_file(self, task_id: int, spec: TaskSpec) -> bytes:
        """The validation file sealed to this evaluator, checked against the commitment."""
        if task_id not in self._sealed_files:
            try:
                file, _ = open_validation(
                    self.chain, self.store, spec, task_id, self.key, self.chain_id
                )
            except (EnvelopeError, BlobNotFound, BlobTooLarge, IntegrityError) as exc:
                raise ValidationUnavailable(
                    f"the validation set sealed to this evaluator does not open: {exc}"
                ) from None
            self._sealed_files[task_id] = file
        return self._sealed_files[task_id]

    def revealed_file(self, task_id: int, spec: TaskSpec) -> bytes | None:
        """The revealed validation file (None before the reveal), or this evaluator's sealed
        copy of it when the revealed CID does not give it (`tasks.validation_file`)."""
        return validation_file(self.chain, self.store, spec, task_id, self.key, self.chain_id)

    def score(self, view: TaskView, model: ModelSpec, node_id: int, dataset: Dataset) -> int:
        """A valid node's score, kept per node and dataset: each round's frontier reads the
        architecture's and earlier merges' scores again, without hashing their weights again."""
        key = (node_id, dataset.digest)
        if key not in view.scores:
            weights = self.verdict(view, node_id).weights
            assert weights is not None
            view.scores[key] = self.score_arrays(model, to_arrays(weights), dataset, view.spec)
        return view.scores[key]

    def score_arrays(
        self,
        model: ModelSpec,
        weights: Mapping[str, npt.NDArray[np.float32]],
        dataset: Dataset,
        spec: TaskSpec,
    ) -> int:
        return self.scored(model, weights, dataset, spec).total

    def scored(
        self,
        model: ModelSpec,
        weights: Mapping[str, npt.NDArray[np.float32]],
        dataset: Dataset,
        spec: TaskSpec,
    ) -> Scores:
        """The scores of `weights`, run once per model, dataset and weights (by content)."""
        key = (model, dataset.digest, arrays_digest(weights))
        if key not in self._scores:
            self.scorings += 1
            with self.watch.measure("scoring"):
                self._scores[key] = scores(
                    model,
                    to_tensors(weights),
                    dataset,
                    spec.metric,
                    spec.scoring_seconds,
                    self.clock,
                )
        return self._scores[key]

    # ------------------------------------------------------------------ verdicts

    def verdict(self, view: TaskView, node_id: int) -> Verdict:
        """The node's verdict (cached): architecture, update or merge."""
        if node_id in view.verdicts:
            return view.verdicts[node_id]
        started = time.perf_counter()
        with self.watch.measure("checks"):
            try:
                verdict = self._decide(view, view.records[node_id])
            except NODE_ERRORS as exc:  # bytes the checks let through, refused on use
                verdict = refusal(node_id, exc)
                log.info("node %d is invalid: %s", node_id, verdict.reason)
        view.verdicts[node_id] = verdict
        self.check_seconds[node_id] = time.perf_counter() - started
        return verdict

    def _decide(self, view: TaskView, record: NodeRecord) -> Verdict:
        node_id = record.node_id
        if record.kind is NodeKind.ARCHITECTURE:
            spec = view.spec
            verdict, model = check_architecture(
                record, self.store, spec.max_blob_bytes, spec.data, spec.metric, task=spec
            )
            if model is not None:
                view.architectures[node_id] = model
            return verdict
        arch_id = architecture_of(view.records, node_id)
        if record.kind is NodeKind.UPDATE and not view.spec.aggregates(record.round):
            same = [  # the cap is per account and architecture: one lineage each
                u
                for u in updates_by(view.records, record.author, record.round)
                if architecture_of(view.records, u) == arch_id
            ]
            earlier = same.index(node_id)
            if earlier >= view.spec.max_submissions_per_round:
                detail = (
                    f"{record.author} already submitted {earlier} updates to architecture "
                    f"{arch_id} in round {record.round}, the task's cap is "
                    f"{view.spec.max_submissions_per_round}"
                )  # nothing is fetched: the cap bounds the work of reading updates too
                return Verdict.refused(node_id, Refusal.OVER_CAP, detail)
        if not self.verdict(view, arch_id).valid:
            return Verdict.refused(node_id, Refusal.SPEC, f"architecture {arch_id} is invalid")
        if record.kind is NodeKind.UPDATE and view.spec.aggregates(record.round):
            return self._check_aggregate(view, record)
        if record.kind is NodeKind.UPDATE:
            return self._check_update(view, record, view.architectures[arch_id])
        return self._check_merge(view, record, view.architectures[arch_id])

    def _check_update(self, view: TaskView, record: NodeRecord, model: ModelSpec) -> Verdict:
        parent = self.verdict(view, record.parents[0])
        if parent.weights is None:
            return Verdict.refused(
                record.node_id, Refusal.BINDING, f"built on invalid node {record.parents[0]}"
            )
        verdict = self._check_blob(view, record, model, parent.weights)
        if verdict.weights is None:
            return verdict
        original = self._original(view, record.node_id, weights_digest(verdict.weights))
        if original is not None:  # one update, one voice: the first to submit it
            detail = f"the same weights as update {original}, submitted earlier"
            return Verdict.refused(record.node_id, Refusal.COPY, detail)
        return verdict

    def _original(self, view: TaskView, node_id: int, digest: bytes) -> int | None:
        """The earliest update in clear with these weights, if it is not `node_id`. Every
        earlier update is decided first, so the answer does not depend on the order asked, and
        each is decided once: the work is the new updates, not the tree."""
        while view.checked_below < node_id:
            earlier = view.records.get(view.checked_below)
            view.checked_below += 1  # before deciding it: its own check starts from here
            if (
                earlier is not None
                and earlier.kind is NodeKind.UPDATE
                and not view.spec.aggregates(earlier.round)
            ):
                self.verdict(view, earlier.node_id)  # records its digest
        first = view.first_with.setdefault(digest, node_id)
        return None if first == node_id else first

    def _check_blob(
        self,
        view: TaskView,
        record: NodeRecord,
        model: ModelSpec,
        parent_weights: Mapping[str, torch.Tensor],
    ) -> Verdict:
        return check_update(
            record,
            self.store,
            self.key,
            model,
            dict(parent_weights),
            record.task_id,
            view.spec.no_update_tolerance,
            view.spec.max_blob_bytes,
            chain_id=self.chain_id,
        )

    def _check_merge(self, view: TaskView, record: NodeRecord, model: ModelSpec) -> Verdict:
        opened = self.open_posted(view, record, model)
        if isinstance(opened, Verdict):
            return opened
        return Verdict.accepted(record.node_id, opened.weights)

    def open_posted(
        self, view: TaskView, record: NodeRecord, model: ModelSpec
    ) -> MergeBundle | Verdict:
        """The posted merge's plaintext, or the verdict that refuses it."""
        cap = view.spec.max_blob_bytes
        try:
            blob = self.store.get(record.cid, cap)
        except StorageError as exc:
            return Verdict.refused(record.node_id, Refusal.BLOB_MISSING, str(exc))
        if sha256(blob) != record.digest:
            return Verdict.refused(record.node_id, Refusal.DIGEST_MISMATCH, "blob digest")
        try:
            bundle = open_merge(record, blob, self.key, model, cap, self.chain_id)
        except EnvelopeError as exc:
            return Verdict.refused(record.node_id, Refusal.UNDECRYPTABLE, str(exc))
        except WeightsError as exc:
            return Verdict.refused(record.node_id, Refusal.WEIGHTS, str(exc))
        if weights_digest(bundle.weights) != record.plaintext_digest:
            return Verdict.refused(record.node_id, Refusal.DIGEST_MISMATCH, "plaintext digest")
        return bundle

    def groups_of(self, task_id: int, view: TaskView, round_index: int) -> dict[int, Group]:
        """The groups of a round past its midpoint, after which nobody can join (cached)."""
        if round_index not in view.groups:
            aggregation = view.spec.aggregation
            assert aggregation is not None
            view.groups[round_index] = round_groups(
                self.chain, self.chain_id, task_id, round_index, aggregation.max_miners
            )
        return view.groups[round_index]

    def _check_aggregate(self, view: TaskView, record: NodeRecord) -> Verdict:
        """A secure aggregation update (`aggregation.submission_verdict`)."""
        aggregation = view.spec.aggregation
        assert aggregation is not None
        base_weights = self.verdict(view, record.parents[0]).weights
        if base_weights is None:  # an invalid node, or a sealed update nobody can read
            detail = f"built on node {record.parents[0]}, whose weights cannot be read"
            return Verdict.refused(record.node_id, Refusal.BINDING, detail)
        return submission_verdict(
            record,
            view.records,
            self.groups_of(record.task_id, view, record.round).get(record.parents[0]),
            self.store,
            aggregation,
            value_count(base_weights),
            view.spec.max_blob_bytes,
        )

    # ------------------------------------------------------------------ settlement scores

    def node_result(self, view: TaskView, node_id: int, dataset: Dataset) -> Score:
        """The node's verdict and its score on `dataset`; a node whose checked bytes still fail
        to score (`NODE_ERRORS`), or take longer than the task's `scoring_seconds`, is invalid
        with the reason."""
        verdict = self.verdict(view, node_id)
        if not verdict.valid:
            return Score(node_id=node_id, valid=False, reason=verdict.reason)
        try:
            value = self.node_score(view, node_id, dataset)
        except NODE_ERRORS as exc:
            reason = refusal(node_id, exc).reason
            if isinstance(exc, ScoringTimeout):  # this machine's clock: others may disagree
                log.warning("node %d is invalid on this machine: %s", node_id, reason)
            return Score(node_id=node_id, valid=False, reason=reason)
        return Score(node_id=node_id, valid=True, value=value)

    def node_score(self, view: TaskView, node_id: int, dataset: Dataset) -> int:
        """The score of a valid node on `dataset`."""
        model = self.architecture(view, architecture_of(view.records, node_id))
        return self.score(view, model, node_id, dataset)


def credited_samples(spec: TaskSpec, record: NodeRecord) -> int:
    return min(record.samples, spec.max_samples_credited)


def load_dataset(file: bytes, spec: TaskSpec, what: str) -> Dataset:
    """The sponsor's validation file read, as many rows as the spec declares
    (ValidationUnavailable if it is malformed)."""
    try:
        return load_validation(file, spec)
    except DataFormatError as exc:
        raise ValidationUnavailable(f"{what} does not load: {exc}") from None
