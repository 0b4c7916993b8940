"""The evaluator process: each round's merge while the task runs, then the payouts.

`Evaluator.step(task_id)` does whatever the task's phase calls for and is safe to repeat:

- rounds closed and not merged: for each architecture the round's updates built on, check
  every update, `merge_round` them on the sealed validation set, seal the merge to the
  evaluators, the sponsor and the registered miners, upload and post it (another evaluator's
  merge is confirmed instead, only once its blob is fetched, opened and found to be this
  evaluator's merge bit for bit);
- after the reveal: decide and score every node on the revealed file, the coalition scores
  of every merge that gained and the added scores of the updates merges left out, the payouts
  by the reward rule, upload the report, post its root. A merge the quorum had not confirmed
  by the reveal is not fetched or scored: its verdict is `unconfirmed`
  (`rewards.unconfirmed_merges`).

The work is bounded (DESIGN.md, "Bounded evaluator work"): an architecture over the task's
scoring budget is refused `over-budget` unscored, an account's updates past the task's cap
per round are `over-cap` unread, a round merge makes at most 3k scorings for k updates,
settlement one per node and one per merge parent, and a scoring past `scoring_seconds`
makes its node invalid (`scoring-timeout`) instead of holding settlement up.

The chain says which merges and roots are posted; the state file keeps the posted report's
CID between scoring and posting, so a restart posts the same report instead of scoring again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from eth_account.signers.local import LocalAccount
from phe import paillier

from marketplace.aggregation import (
    MIN_MEMBERS,
    Group,
    apply_mean,
    join_refunds,
    open_group_sum,
    packing,
    public_key,
    revealed_seeds,
    round_groups,
    submission_verdict,
    submitted_members,
    value_count,
)
from marketplace.chain import ChainClient
from marketplace.checks import (
    NODE_ERRORS,
    Refusal,
    Verdict,
    check_architecture,
    check_update,
    refusal,
)
from marketplace.codec import arrays_digest, weights_digest
from marketplace.crypto import sha256
from marketplace.delivery import Delivery, deliver
from marketplace.envelope import X25519KeyPair
from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    DataFormatError,
    EnvelopeError,
    IntegrityError,
    MarketplaceError,
    ScoringTimeout,
    SpecError,
    StorageError,
    ValidationUnavailable,
    WeightsError,
)
from marketplace.evaluation import (
    Clock,
    Dataset,
    Scores,
    ceiling,
    class_rows,
    load_validation,
    scores,
)
from marketplace.faults import crash_point
from marketplace.merge import (
    Candidate,
    ClassRecall,
    MergeResult,
    MergeRule,
    coalition_value,
    merge_round,
)
from marketplace.messages import (
    Aggregation,
    Metric,
    NodeKind,
    NodeRecord,
    Phase,
    Score,
    TaskSpec,
)
from marketplace.models import ModelSpec, flops_per_sample
from marketplace.report import (
    MAX_REPORT_BYTES,
    NodeVerdict,
    PayoutReport,
    coalition_key,
    payout_entries,
    posted_reports,
)
from marketplace.rewards import (
    Evidence,
    Frontier,
    architecture_of,
    compute_payouts,
    find_winner,
    node_gains,
    updates_by,
)
from marketplace.secagg import SecAggError, decode_submission, sum_round, uncancelled_masks
from marketplace.shapley import Coalition
from marketplace.state import StateFile
from marketplace.storage import BlobStore
from marketplace.tasks import (
    MergeBundle,
    account_key,
    encode_merge,
    merge_readers,
    nodes_by_id,
    of_kind,
    open_merge,
    open_validation,
    paillier_key,
    read_spec,
    seal_merge,
    unconfirmed,
    validation_file,
)
from marketplace.timing import Stopwatch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

NO_MERGE = MergeResult(kept=(), weights={}, score=0, samples=0, no_updates=(), left_out=())


@dataclass
class TaskView:
    """What the evaluator knows of one task while it works on it (rebuilt after a restart)."""

    spec: TaskSpec
    records: dict[int, NodeRecord]
    architectures: dict[int, ModelSpec] = field(default_factory=dict)
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    groups: dict[int, dict[int, Group]] = field(default_factory=dict)  # round -> base -> group
    first_with: dict[bytes, int] = field(default_factory=dict)  # weights digest -> first update
    checked_below: int = 1  # every update in clear with a smaller id has its verdict
    scores: dict[tuple[int, bytes], int] = field(default_factory=dict)  # (node, dataset digest)


class Evaluator:
    """One of a task's evaluators.

    Args:
        chain, store: the market.
        account: signs transactions and merges; its `account_key` reads sealed blobs.
        state: this evaluator's state file (None: score and check, never post).
        chain_id: envelopes are bound to it.
        key: the X25519 key that reads sealed blobs (default: the account's `account_key`).
        clock: times each scoring against the task's `scoring_seconds` (tests pass a fake).
    """

    def __init__(
        self,
        chain: ChainClient,
        store: BlobStore,
        account: LocalAccount,
        state: StateFile | None,
        chain_id: int,
        watch: Stopwatch | None = None,
        key: X25519KeyPair | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.chain = chain
        self.store = store
        self.account = account
        self.address = str(account.address)
        self.key = key or account_key(account)
        self.state = state
        self.chain_id = chain_id
        self.watch = watch or Stopwatch()
        self._validation: dict[int, Dataset] = {}
        self._sealed_files: dict[int, bytes] = {}  # task -> its validation file, as sealed
        # (task, round, architecture or base) merged, confirmed or given up on by this
        # evaluator: not looked at again, so a pass costs the open rounds, not every round.
        self._finished: set[tuple[int, int, int]] = set()
        self._views: dict[int, TaskView] = {}
        self._paillier: tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey] | None = None
        self.check_seconds: dict[int, float] = {}  # node id -> time to fetch, open and check it
        self.clock = clock
        self.scorings = 0  # models run on a validation set, over this evaluator's life
        # (model, dataset digest, weights digest) -> score: a round's scorings (sealed set) are
        # settlement's too (the revealed set is the same file), and each round's frontier is
        # scored once, so the work per round is the round's new nodes, not the tree.
        self._scores: dict[tuple[ModelSpec, bytes, bytes], Scores] = {}

    # ------------------------------------------------------------------ the loop

    def step(self, task_id: int) -> list[str]:
        """Do what the task's phase calls for; returns what was done, as lines."""
        phase = self.chain.phase(task_id)
        if phase in (Phase.ROUNDS, Phase.REVEAL):
            return self.post_merges(task_id)
        if phase is Phase.EVALUATION and not self.has_posted_root(task_id):
            try:
                report, cid = self.settle(task_id)
            except ValidationUnavailable as exc:  # the next pass tries again: never wrong data
                log.warning("task %d: cannot settle yet: %s", task_id, exc)
                return [f"cannot settle yet: {exc}"]
            return [f"posted the payout root {report.root} ({len(report.payouts)} leaves, {cid})"]
        return []

    def finished(self, task_id: int) -> bool:
        phase = self.chain.phase(task_id)
        if phase in (Phase.ROUNDS, Phase.REVEAL):
            return False
        return phase is not Phase.EVALUATION or self.has_posted_root(task_id)

    def has_posted_root(self, task_id: int) -> bool:
        return self.address in posted_reports(self.chain, task_id)

    # ------------------------------------------------------------------ round merges

    def post_merges(self, task_id: int) -> list[str]:
        """Post (or confirm) the merge of every closed round not merged yet."""
        task = self.chain.task(task_id)
        now = int(self.chain.w3.eth.get_block("latest")["timestamp"])
        closed = task.schedule.closed(now)  # as soon as the contract takes their merges
        if not closed:
            return []
        view = self.view(task_id)
        done: list[str] = []
        try:
            for round_index in closed:
                if view.spec.aggregates(round_index):
                    done.extend(self._aggregate_round(task_id, view, round_index))
                else:
                    done.extend(self._merge_round(task_id, view, round_index))
        except ValidationUnavailable as exc:  # the sponsor's sealed set: the next pass retries
            log.warning("task %d: no merges yet: %s", task_id, exc)
            done.append(f"no merges yet: {exc}")
        return done

    def _merge_round(self, task_id: int, view: TaskView, round_index: int) -> list[str]:
        """Merge a round in clear, one architecture at a time: one that fails on use (bytes
        that passed their checks) is skipped with its reason, the others still merge."""
        groups: dict[int, list[NodeRecord]] = defaultdict(list)
        for record in of_kind(view.records, NodeKind.UPDATE):
            if record.round == round_index:
                groups[architecture_of(view.records, record.node_id)].append(record)
        done = []
        for arch_id, updates in sorted(groups.items()):
            try:
                line = self._merge_group(task_id, view, round_index, arch_id, updates)
            except NODE_ERRORS as exc:
                self._finished.add((task_id, round_index, arch_id))
                line = f"round {round_index}: no merge of architecture {arch_id}: {exc}"
                log.warning("task %d %s", task_id, line)
            if line:
                done.append(line)
        return done

    def _merge_group(
        self,
        task_id: int,
        view: TaskView,
        round_index: int,
        arch_id: int,
        updates: list[NodeRecord],
    ) -> str | None:
        marker = (task_id, round_index, arch_id)
        if marker in self._finished:
            return None
        if self._merged(task_id, view, round_index, arch_id):  # before a restart
            self._finished.add(marker)
            return None
        result = self.merge_of(task_id, view, arch_id, updates)
        if not result.kept:
            self._finished.add(marker)
            log.info("task %d round %d: no update kept for architecture %d", *marker)
            return None
        tensors = _tensors(result.weights)
        plain_digest = weights_digest(tensors)
        model = self._architecture(view, arch_id)
        for record in of_kind(view.records, NodeKind.MERGE):
            if self._recomputed(view, record, model, round_index, result, plain_digest):
                with self.watch.measure("chain"):
                    self.chain.confirm_merge(
                        self.address, task_id, record.node_id, plain_digest, record.parents
                    )
                self._finished.add(marker)
                return f"round {round_index}: confirmed merge {record.node_id}"
        node_id = self._post_merge(
            task_id, view, round_index, result.kept, tensors, result.score, result.samples
        )
        self._finished.add(marker)
        return (
            f"round {round_index}: posted merge {node_id} of {list(result.kept)} "
            f"(score {result.score}, left out {list(result.left_out)}, "
            f"{result.scorings} scorings)"
        )

    def _recomputed(
        self,
        view: TaskView,
        record: NodeRecord,
        model: ModelSpec,
        round_index: int,
        result: MergeResult,
        plain_digest: bytes,
    ) -> bool:
        """Whether the posted merge `record` is this evaluator's `result` bit for bit: the same
        round, parents, samples and plaintext digest on-chain, and a blob that is fetched, opens
        and holds those weights, round and round score (what miners choose a parent by). Only
        then is it confirmed: a digest alone can be copied by an evaluator that never uploads."""
        posted = (record.round, record.parents, record.samples, record.plaintext_digest)
        if posted != (round_index, result.kept, result.samples, plain_digest):
            return False
        opened = self._open_posted(view, record, model)
        if isinstance(opened, Verdict):
            log.warning("merge %d is not confirmed: %s", record.node_id, opened.reason)
            return False
        return (opened.round, opened.round_score) == (round_index, result.score)

    def _post_merge(
        self,
        task_id: int,
        view: TaskView,
        round_index: int,
        parents: tuple[int, ...],
        tensors: Mapping[str, torch.Tensor],
        round_score: int,
        samples: int,
    ) -> int:
        """Seal a merge to its readers, upload it and post it; its node id."""
        readers = merge_readers(self.chain, view.spec, task_id)
        blob = seal_merge(
            encode_merge(tensors, round_index, round_score),
            readers,
            self.account,
            task_id,
            parents,
            self.chain_id,
        )
        with self.watch.measure("storage"):
            cid = self.store.put(blob)
        with self.watch.measure("chain"):
            posted = self.chain.post_merge(
                self.address,
                task_id,
                round_index,
                parents,
                samples,
                sha256(blob),
                weights_digest(tensors),
                cid,
            )
        view.records = nodes_by_id(self.chain, task_id)
        assert posted.value is not None
        return posted.value

    def merge_of(
        self, task_id: int, view: TaskView, arch_id: int, updates: list[NodeRecord]
    ) -> MergeResult:
        """The round's merge of `updates` (one architecture), on the sealed validation set;
        empty when the architecture is invalid (its updates are too)."""
        if not self.verdict(view, arch_id).valid:
            return NO_MERGE
        validation = self._sealed_validation(task_id, view.spec)
        model = self._architecture(view, arch_id)
        candidates = []
        for record in updates:
            verdict = self.verdict(view, record.node_id)
            parent_verdict = self.verdict(view, record.parents[0])
            if not verdict.valid or parent_verdict.weights is None or verdict.weights is None:
                continue
            candidates.append(
                Candidate(
                    record.node_id,
                    _arrays(verdict.weights),
                    self._credited_samples(view.spec, record),
                    _arrays(parent_verdict.weights),
                )
            )
        if not candidates:
            return NO_MERGE
        base_score, base_weights = self._frontier(view, arch_id, updates[0].round, validation)
        recall = None
        if view.spec.metric is Metric.ACCURACY:
            recall = ClassRecall(
                lambda weights: self._scored(model, weights, validation, view.spec).by_class,
                class_rows(validation),
            )
        return merge_round(
            candidates,
            lambda weights: self._score_arrays(model, weights, validation, view.spec),
            MergeRule.of(view.spec),
            base_score=base_score,
            anchor=base_weights,
            recall=recall,
        )

    def _frontier(
        self, view: TaskView, arch_id: int, round_index: int, dataset: Dataset
    ) -> tuple[int, Mapping[str, npt.NDArray[np.float32]]]:
        """The round's frontier (`rewards.Frontier`, on this evaluator's scores of the
        architecture and its valid merges of earlier rounds): its score and weights, the model
        every miner of the round could start from."""
        model = self._architecture(view, arch_id)
        scores: dict[int, Score] = {}
        for record in [view.records[arch_id], *of_kind(view.records, NodeKind.MERGE)]:
            node_id = record.node_id
            if record.round >= round_index and record.kind is NodeKind.MERGE:
                continue
            if architecture_of(view.records, node_id) != arch_id:
                continue
            verdict = self.verdict(view, node_id)
            if verdict.valid and verdict.weights is not None:
                value = self._score(view, model, node_id, dataset)
                scores[node_id] = Score(node_id=node_id, valid=True, value=value)
        base = Frontier(view.records, scores, 0).base(arch_id, round_index)
        assert base is not None  # the architecture is valid: its updates were checked
        weights = self.verdict(view, base).weights
        assert weights is not None
        return scores[base].value, _arrays(weights)

    def _merged(self, task_id: int, view: TaskView, round_index: int, arch_id: int) -> bool:
        """Whether this evaluator posted or confirmed a merge of the round and architecture."""
        merges = [
            record
            for record in of_kind(view.records, NodeKind.MERGE)
            if record.round == round_index
            and architecture_of(view.records, record.node_id) == arch_id
        ]
        if not merges:
            return False
        mine = 1 << self.chain.evaluators(task_id).index(self.address)
        return any(self.chain.node(task_id, m.node_id).confirmations & mine for m in merges)

    # ------------------------------------------------------------------ secure aggregation

    def _aggregate_round(self, task_id: int, view: TaskView, round_index: int) -> list[str]:
        """Merge each group of a secure aggregation round from its encrypted sum (the key
        holder only: nobody else can open a sum)."""
        aggregation = view.spec.aggregation
        assert aggregation is not None
        if aggregation.key_holder.lower() != self.address.lower():
            return []
        done = []
        for base, group in sorted(self._groups(task_id, view, round_index).items()):
            marker = (task_id, round_index, base)
            if marker in self._finished or self._aggregated(view, round_index, base):
                continue
            line = self._aggregate_group(task_id, view, group)
            if line.startswith("round"):
                done.append(line)
            elif line:  # abandoned or not improving: nothing will change for this group
                self._finished.add(marker)
                done.append(f"round {round_index}, base {base}: {line}")
        return done

    def _aggregate_group(self, task_id: int, view: TaskView, group: Group) -> str:
        aggregation = view.spec.aggregation
        assert aggregation is not None
        if not group.viable:
            return "one miner joined: nothing to aggregate"
        submitted = submitted_members(
            group, view.records, lambda node_id: self.verdict(view, node_id)
        )
        dropped = [i for i in range(len(group.members)) if i not in submitted]
        if len(submitted) < MIN_MEMBERS:
            return (
                f"abandoned: {len(submitted)} of {len(group.members)} miners who joined submitted "
                "a well-formed update, and a sum needs two (a sum of one is that update)"
            )
        seeds = revealed_seeds(self.chain, group, sorted(submitted), dropped)
        if len(seeds) < len(submitted):
            deadline = self.chain.task(task_id).schedule.merge_due(group.round + 1)
            if int(self.chain.w3.eth.get_block("latest")["timestamp"]) < deadline:
                return ""  # the members have until the deadline to reveal their seeds
            return (
                f"abandoned: {len(submitted) - len(seeds)} of the {len(submitted)} miners who "
                "submitted revealed no mask seeds by a quarter round after the close, so the "
                "masks cannot be taken out; no update was opened, and the next round re-runs "
                "with fresh masks"
            )
        base_weights = self.verdict(view, group.base).weights
        assert base_weights is not None  # members' verdicts are valid only on a valid base
        count = value_count(base_weights)
        public, layout = public_key(aggregation), packing(aggregation)
        ciphertexts = {
            i: decode_submission(
                self.store.get(r.cid, view.spec.max_blob_bytes), public, layout, group.masked, count
            )
            for i, r in submitted.items()
        }
        with self.watch.measure("aggregation"):
            encrypted = sum_round(public, group.masked, ciphertexts, dropped)
            correction = uncancelled_masks(seeds, dropped, len(encrypted), public.n)
            try:
                summed = open_group_sum(
                    self._paillier_key(aggregation),
                    aggregation,
                    encrypted,
                    count,
                    len(submitted),
                    correction,
                )
            except SecAggError as exc:
                return f"abandoned: {exc}"
        merged = apply_mean(base_weights, summed, len(submitted))
        validation = self._sealed_validation(task_id, view.spec)
        model = self._architecture(view, architecture_of(view.records, group.base))
        merged_score = self._score_arrays(model, merged, validation, view.spec)
        base_score = self._score(view, model, group.base, validation)
        if merged_score < base_score:
            return (
                f"the mean of {len(submitted)} updates scores {merged_score}, below its base's "
                f"{base_score}: not posted, and the next round builds on the base again"
            )
        kept = tuple(sorted(r.node_id for r in submitted.values()))
        samples = sum(self._credited_samples(view.spec, r) for r in submitted.values())
        node_id = self._post_merge(
            task_id, view, group.round, kept, _tensors(merged), merged_score, samples
        )
        recovered = f", drop-outs: {len(dropped)}" if dropped else ""
        return (
            f"round {group.round}: posted merge {node_id}, the decrypted sum of {list(kept)} on "
            f"{group.base} (score {merged_score}, base {base_score}{recovered})"
        )

    def _aggregated(self, view: TaskView, round_index: int, base: int) -> bool:
        """Whether the group (round, base) has its merge posted."""
        return any(
            merge.round == round_index and view.records[merge.parents[0]].parents[0] == base
            for merge in of_kind(view.records, NodeKind.MERGE)
            if view.records[merge.parents[0]].kind is NodeKind.UPDATE
        )

    def _groups(self, task_id: int, view: TaskView, round_index: int) -> dict[int, Group]:
        """The groups of a round past its midpoint, after which nobody can join (cached)."""
        if round_index not in view.groups:
            aggregation = view.spec.aggregation
            assert aggregation is not None
            view.groups[round_index] = round_groups(
                self.chain, self.chain_id, task_id, round_index, aggregation.max_miners
            )
        return view.groups[round_index]

    def _paillier_key(self, aggregation: Aggregation) -> paillier.PaillierPrivateKey:
        if self._paillier is None:
            self._paillier = paillier_key(self.account)
        public, private = self._paillier
        if public.n != int(aggregation.paillier_n, 16):
            raise MarketplaceError("the task's Paillier key is not this evaluator's")
        return private

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
            self._groups(record.task_id, view, record.round).get(record.parents[0]),
            self.store,
            aggregation,
            value_count(base_weights),
            view.spec.max_blob_bytes,
        )

    # ------------------------------------------------------------------ settlement

    def settle(self, task_id: int) -> tuple[PayoutReport, str]:
        """Score every node on the revealed set, post the payout root; (report, its CID).

        A report uploaded before a restart is posted as it is, without scoring again.
        """
        if self.state is None:
            raise MarketplaceError("this evaluator has no state file: it cannot post")
        saved = self.state.section("tasks", task_id)
        if saved.get("report_cid"):
            report = PayoutReport.from_bytes(self.store.get(saved["report_cid"], MAX_REPORT_BYTES))
            cid = str(saved["report_cid"])
        else:
            report = self.evaluate(task_id)
            with self.watch.measure("storage"):
                cid = self.store.put(report.to_bytes())
            saved["report_cid"] = cid
            self.state.save()
        crash_point("evaluator:scored")
        root = bytes.fromhex(report.root.removeprefix("0x"))
        with self.watch.measure("chain"):
            self.chain.post_payout_root(self.address, task_id, root, report.total, cid)
        saved["posted"] = True
        self.state.save()
        return report, cid

    def evaluate(self, task_id: int) -> PayoutReport:
        """Every node decided and scored on the revealed validation file, and the payouts."""
        view = self.view(task_id)
        spec = view.spec
        file = self._revealed_file(task_id, spec)
        if file is None:
            raise MarketplaceError(f"task {task_id}'s validation set is not revealed yet")
        dataset = _dataset(file, spec, "the revealed validation file")
        scorings = self.scorings
        scores: dict[int, Score] = unconfirmed(self.chain, task_id, view.records)
        for node_id in sorted(view.records):
            if node_id in scores:  # a merge short of the quorum: not fetched, not scored
                continue
            if self.verdict(view, node_id).sealed:  # seen only in its round's sum: it stands
                parent = scores[view.records[node_id].parents[0]]  # at its base's score
                scores[node_id] = Score(node_id=node_id, valid=True, value=parent.value)
            else:
                scores[node_id] = self.node_result(view, node_id, dataset)
        coalitions, added = self.evidence(view, scores, dataset)
        # Every architecture whose verdict is valid: one whose own scoring timed out (on this
        # machine) still prices its updates' compute.
        flops = {arch_id: flops_per_sample(model) for arch_id, model in view.architectures.items()}
        task = self.chain.task(task_id)
        records = list(view.records.values())
        joins = join_refunds(
            self.chain.round_joins(task_id), view.records, scores, spec, task.deposit
        )
        evidence = Evidence(coalitions, added, flops, ceiling(dataset, spec.metric))
        payouts = compute_payouts(records, scores, evidence, spec, task.bounty, task.deposit, joins)
        entries, root, total = payout_entries(payouts)
        gains = node_gains(records, scores)
        winner = find_winner(records, scores)
        nodes = tuple(
            NodeVerdict(
                node_id=r.node_id,
                kind=r.kind,
                author=r.author,
                parents=r.parents,
                valid=scores[r.node_id].valid,
                reason=scores[r.node_id].reason,
                score=scores[r.node_id].value,
                gain=gains[r.node_id],
            )
            for r in records
        )
        return PayoutReport(
            task_id=task_id,
            chain_id=self.chain_id,
            contract=self.chain.address,
            evaluator=self.address,
            validation_digest=sha256(file).hex(),
            winner=winner,
            nodes=nodes,
            coalitions={
                merge_id: {coalition_key(c): value for c, value in table.items()}
                for merge_id, table in coalitions.items()
            },
            added=added,
            flops_per_sample=flops,
            ceiling=evidence.ceiling,
            payouts=entries,
            root="0x" + root.hex(),
            total=total,
            scorings=self.scorings - scorings,
            delivery=self._deliver(view, task_id, winner),
        )

    def _deliver(self, view: TaskView, task_id: int, winner: int | None) -> Delivery | None:
        """The winner sealed to the sponsor and uploaded (DESIGN.md, "Delivery")."""
        if winner is None:
            return None
        weights = self.verdict(view, winner).weights
        assert weights is not None  # the winner is a valid merge or architecture
        with self.watch.measure("storage"):
            return deliver(
                self.store, self.account, view.spec, task_id, winner, weights, self.chain_id
            )

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
        model = self._architecture(view, architecture_of(view.records, node_id))
        return self._score(view, model, node_id, dataset)

    def evidence(
        self, view: TaskView, scores: dict[int, Score], dataset: Dataset
    ) -> tuple[dict[int, dict[Coalition, int]], dict[int, int]]:
        """What the reward rule replays besides the scores (`rewards.Evidence`): the coalition
        scores of every merge in clear that rose above its frontier, and the added score of
        every update its round's merge left out. A merge one of whose scorings passes the time
        limit is made invalid in `scores` (`scoring-timeout`), and the frontiers after it are
        worked out again."""
        coalitions: dict[int, dict[Coalition, int]] = {}
        while True:
            frontier = Frontier(view.records, scores, view.spec.min_gain)
            pending = [
                merge_id
                for merge_id in frontier.gaining_merges()
                if merge_id not in coalitions
                and not view.spec.aggregates(view.records[merge_id].round)
            ]
            if not pending:
                return coalitions, self._added(view, scores, frontier, dataset)
            try:
                coalitions[pending[0]] = self._coalitions(view, frontier, pending[0], dataset)
            except ScoringTimeout as exc:
                reason = refusal(pending[0], exc).reason
                log.warning("merge %d is invalid on this machine: %s", pending[0], reason)
                scores[pending[0]] = Score(node_id=pending[0], valid=False, reason=reason)
                coalitions.clear()

    def _coalitions(
        self, view: TaskView, frontier: Frontier, merge_id: int, dataset: Dataset
    ) -> dict[Coalition, int]:
        """Coalition of the merge's valid update parents -> the score of their average."""
        base = frontier.of(merge_id)
        assert base is not None  # a merge that gained has a frontier
        average = self.averager(view, frontier, merge_id, dataset)
        played = MergeRule.of(view.spec).contributions(
            frontier.members(merge_id), lambda coalition: average(coalition) if coalition else base
        )
        return {coalition: value for coalition, value in played.coalitions.items() if coalition}

    def _added(
        self, view: TaskView, scores: Mapping[int, Score], frontier: Frontier, dataset: Dataset
    ) -> dict[int, int]:
        """Update id -> the score of its round's merge with it added, for every valid update
        in clear that the merge left out and that improved nothing on its own (`rewards` judges
        it harmful by that score; one that improved keeps its deposit whatever it is)."""
        added = {}
        for record in of_kind(view.records, NodeKind.UPDATE):
            if not scores[record.node_id].valid or view.spec.aggregates(record.round):
                continue
            base = frontier.of(record.node_id)
            if base is None or scores[record.node_id].value >= base + view.spec.min_gain:
                continue
            left_out = frontier.added_coalition(record.node_id)
            if left_out is None:
                continue
            merge_id, coalition = left_out
            try:
                added[record.node_id] = self.averager(view, frontier, merge_id, dataset)(coalition)
            except ScoringTimeout:  # this machine's clock: the update is given the doubt
                added[record.node_id] = scores[merge_id].value
        return added

    def averager(
        self, view: TaskView, frontier: Frontier, merge_id: int, dataset: Dataset
    ) -> Callable[[Coalition], int]:
        """A coalition's value, as `merge_round` values it (`merge.coalition_value`): the
        better score of the updates' average without and with the merge's frontier model."""
        model = self._architecture(view, architecture_of(view.records, merge_id))
        base = frontier.base(architecture_of(view.records, merge_id), view.records[merge_id].round)
        anchor = None if base is None else self.verdict(view, base).weights

        def value(coalition: Coalition) -> int:
            parts = []
            for node_id in coalition:
                weights = self.verdict(view, node_id).weights
                assert weights is not None  # a valid update in clear
                parts.append(
                    (_arrays(weights), self._credited_samples(view.spec, view.records[node_id]))
                )
            return coalition_value(
                parts,
                view.spec.merge_weighting,
                None if anchor is None else _arrays(anchor),
                lambda weights: self._score_arrays(model, weights, dataset, view.spec),
            )[0]

        return value

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
        opened = self._open_posted(view, record, model)
        if isinstance(opened, Verdict):
            return opened
        return Verdict.accepted(record.node_id, opened.weights)

    def _open_posted(
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

    # ------------------------------------------------------------------ helpers

    def view(self, task_id: int) -> TaskView:
        """The task as this evaluator knows it, its node list read again from the chain."""
        with self.watch.measure("chain"):
            records = nodes_by_id(self.chain, task_id)
        view = self._views.get(task_id)
        if view is None:
            view = self._views[task_id] = TaskView(read_spec(self.chain, self.store, task_id), {})
        view.records = records
        return view

    def _architecture(self, view: TaskView, arch_id: int) -> ModelSpec:
        """The spec of a valid architecture (SpecError, with its reason, for an invalid one:
        nothing is ever built, merged or scored on it)."""
        verdict = self.verdict(view, arch_id)
        if arch_id not in view.architectures:
            raise SpecError(f"architecture {arch_id} is invalid ({verdict.reason})")
        return view.architectures[arch_id]

    def _sealed_validation(self, task_id: int, spec: TaskSpec) -> Dataset:
        if task_id not in self._validation:
            file = self._sealed_file(task_id, spec)
            self._validation[task_id] = _dataset(file, spec, "the sealed validation file")
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

    def _revealed_file(self, task_id: int, spec: TaskSpec) -> bytes | None:
        """The revealed validation file (None before the reveal), or this evaluator's sealed
        copy of it when the revealed CID does not give it (`tasks.validation_file`)."""
        return validation_file(self.chain, self.store, spec, task_id, self.key, self.chain_id)

    @staticmethod
    def _credited_samples(spec: TaskSpec, record: NodeRecord) -> int:
        return min(record.samples, spec.max_samples_credited)

    def _score(self, view: TaskView, model: ModelSpec, node_id: int, dataset: Dataset) -> int:
        """A valid node's score, kept per node and dataset: each round's frontier reads the
        architecture's and earlier merges' scores again, without hashing their weights again."""
        key = (node_id, dataset.digest)
        if key not in view.scores:
            weights = self.verdict(view, node_id).weights
            assert weights is not None
            view.scores[key] = self._score_arrays(model, _arrays(weights), dataset, view.spec)
        return view.scores[key]

    def _score_arrays(
        self,
        model: ModelSpec,
        weights: Mapping[str, npt.NDArray[np.float32]],
        dataset: Dataset,
        spec: TaskSpec,
    ) -> int:
        return self._scored(model, weights, dataset, spec).total

    def _scored(
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
                    model, _tensors(weights), dataset, spec.metric, spec.scoring_seconds, self.clock
                )
        return self._scores[key]


def _dataset(file: bytes, spec: TaskSpec, what: str) -> Dataset:
    """The sponsor's validation file read, as many rows as the spec declares
    (ValidationUnavailable if it is malformed)."""
    try:
        return load_validation(file, spec)
    except DataFormatError as exc:
        raise ValidationUnavailable(f"{what} does not load: {exc}") from None


def _arrays(weights: Mapping[str, torch.Tensor]) -> dict[str, npt.NDArray[np.float32]]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in weights.items()}


def _tensors(weights: Mapping[str, npt.NDArray[np.float32]]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in weights.items()}
