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
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from eth_account.signers.local import LocalAccount
from phe import paillier

from marketplace.chain.client import ChainClient
from marketplace.delivered.delivery import Delivery, deliver
from marketplace.errors import (
    MarketplaceError,
    ValidationUnavailable,
)
from marketplace.protocol.aggregation import (
    MIN_MEMBERS,
    Group,
    apply_mean,
    join_refunds,
    open_group_sum,
    packing,
    public_key,
    revealed_seeds,
    submitted_members,
    value_count,
)
from marketplace.protocol.checks import (
    NODE_ERRORS,
    Verdict,
)
from marketplace.protocol.tasks import (
    account_key,
    encode_merge,
    merge_readers,
    nodes_by_id,
    of_kind,
    paillier_key,
    seal_merge,
    unconfirmed,
)
from marketplace.roles.scorer import (
    Scorer,
    TaskView,
    credited_samples,
    load_dataset,
    to_arrays,
    to_tensors,
)
from marketplace.rules.dag import architecture_of
from marketplace.rules.evaluation import (
    Clock,
    Dataset,
    ceiling,
    class_rows,
)
from marketplace.rules.frontier import Frontier
from marketplace.rules.merge import (
    Candidate,
    ClassRecall,
    MergeResult,
    MergeRule,
    merge_round,
)
from marketplace.rules.messages import (
    Aggregation,
    Metric,
    NodeKind,
    NodeRecord,
    Phase,
    Score,
)
from marketplace.rules.models import ModelSpec, flops_per_sample
from marketplace.rules.rewards import Evidence, compute_payouts, find_winner, node_gains
from marketplace.runtime.faults import crash_point
from marketplace.runtime.state import StateFile
from marketplace.runtime.timing import Stopwatch
from marketplace.storage.stores import BlobStore
from marketplace.wire.codec import weights_digest
from marketplace.wire.crypto import sha256
from marketplace.wire.keys import X25519KeyPair
from marketplace.wire.report import (
    MAX_REPORT_BYTES,
    NodeVerdict,
    PayoutReport,
    coalition_key,
    payout_entries,
    posted_reports,
)
from marketplace.wire.secagg import sum_round
from marketplace.wire.secagg_masks import uncancelled_masks
from marketplace.wire.secagg_packing import SecAggError
from marketplace.wire.secagg_submission import decode_submission

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

NO_MERGE = MergeResult(kept=(), weights={}, score=0, samples=0, no_updates=(), left_out=())


class GroupOutcome(Enum):
    """What opening a secure aggregation group's sum came to, this pass."""

    POSTED = "posted"  # its merge is on the chain
    WAITING = "waiting"  # members may still reveal their mask seeds: look again next pass
    SETTLED = "settled"  # abandoned, or its mean does not improve: nothing will change


@dataclass(frozen=True)
class GroupResult:
    outcome: GroupOutcome
    line: str = ""  # what happened, for the evaluator's output ("" while waiting)


class Evaluator:
    """One of a task's evaluators: the process that posts what its `Scorer` finds (the round
    merges or their confirmations, the secure aggregation sums, the payout report and root).

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
        self.state = state
        self.chain_id = chain_id
        self.watch = watch or Stopwatch()
        self.scorer = Scorer(chain, store, key or account_key(account), chain_id, self.watch, clock)
        # (task, round, architecture or base) merged, confirmed or given up on by this
        # evaluator: not looked at again, so a pass costs the open rounds, not every round.
        self._finished: set[tuple[int, int, int]] = set()
        self._paillier: tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey] | None = None

    # The scorer's, read through the evaluator by its callers (the CLI, the demo, the tests).

    @property
    def key(self) -> X25519KeyPair:
        return self.scorer.key

    @property
    def scorings(self) -> int:
        """Models run on a validation set, over this evaluator's life."""
        return self.scorer.scorings

    @property
    def check_seconds(self) -> dict[int, float]:
        """Node id -> the time to fetch, open and check it."""
        return self.scorer.check_seconds

    def view(self, task_id: int) -> TaskView:
        return self.scorer.view(task_id)

    def verdict(self, view: TaskView, node_id: int) -> Verdict:
        return self.scorer.verdict(view, node_id)

    def node_result(self, view: TaskView, node_id: int, dataset: Dataset) -> Score:
        return self.scorer.node_result(view, node_id, dataset)

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
        now = self.chain.now()
        closed = task.schedule.closed(now)  # as soon as the contract takes their merges
        if not closed:
            return []
        view = self.scorer.view(task_id)
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
        tensors = to_tensors(result.weights)
        plain_digest = weights_digest(tensors)
        model = self.scorer.architecture(view, arch_id)
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
        opened = self.scorer.open_posted(view, record, model)
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
        if not self.scorer.verdict(view, arch_id).valid:
            return NO_MERGE
        validation = self.scorer.sealed_validation(task_id, view.spec)
        model = self.scorer.architecture(view, arch_id)
        candidates = []
        for record in updates:
            verdict = self.scorer.verdict(view, record.node_id)
            parent_verdict = self.scorer.verdict(view, record.parents[0])
            if not verdict.valid or parent_verdict.weights is None or verdict.weights is None:
                continue
            candidates.append(
                Candidate(
                    record.node_id,
                    to_arrays(verdict.weights),
                    credited_samples(view.spec, record),
                    to_arrays(parent_verdict.weights),
                )
            )
        if not candidates:
            return NO_MERGE
        base_score, base_weights = self._frontier(view, arch_id, updates[0].round, validation)
        recall = None
        if view.spec.metric is Metric.ACCURACY:
            recall = ClassRecall(
                lambda weights: self.scorer.scored(model, weights, validation, view.spec).by_class,
                class_rows(validation),
            )
        return merge_round(
            candidates,
            lambda weights: self.scorer.score_arrays(model, weights, validation, view.spec),
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
        model = self.scorer.architecture(view, arch_id)
        scores: dict[int, Score] = {}
        for record in [view.records[arch_id], *of_kind(view.records, NodeKind.MERGE)]:
            node_id = record.node_id
            if record.round >= round_index and record.kind is NodeKind.MERGE:
                continue
            if architecture_of(view.records, node_id) != arch_id:
                continue
            verdict = self.scorer.verdict(view, node_id)
            if verdict.valid and verdict.weights is not None:
                value = self.scorer.score(view, model, node_id, dataset)
                scores[node_id] = Score(node_id=node_id, valid=True, value=value)
        base = Frontier(view.records, scores, 0).base(arch_id, round_index)
        assert base is not None  # the architecture is valid: its updates were checked
        weights = self.scorer.verdict(view, base).weights
        assert weights is not None
        return scores[base].value, to_arrays(weights)

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
        for base, group in sorted(self.scorer.groups_of(task_id, view, round_index).items()):
            marker = (task_id, round_index, base)
            if marker in self._finished or self._aggregated(view, round_index, base):
                continue
            result = self._aggregate_group(task_id, view, group)
            if result.outcome is GroupOutcome.POSTED:
                done.append(result.line)
            elif result.outcome is GroupOutcome.SETTLED:  # nothing will change for this group
                self._finished.add(marker)
                done.append(f"round {round_index}, base {base}: {result.line}")
        return done

    def _aggregate_group(self, task_id: int, view: TaskView, group: Group) -> GroupResult:
        aggregation = view.spec.aggregation
        assert aggregation is not None
        if not group.viable:
            return GroupResult(GroupOutcome.SETTLED, "one miner joined: nothing to aggregate")
        submitted = submitted_members(
            group, view.records, lambda node_id: self.scorer.verdict(view, node_id)
        )
        dropped = [i for i in range(len(group.members)) if i not in submitted]
        if len(submitted) < MIN_MEMBERS:
            return GroupResult(
                GroupOutcome.SETTLED,
                f"abandoned: {len(submitted)} of {len(group.members)} miners who joined submitted "
                "a well-formed update, and a sum needs two (a sum of one is that update)",
            )
        seeds = revealed_seeds(self.chain, group, sorted(submitted), dropped)
        if len(seeds) < len(submitted):
            deadline = self.chain.task(task_id).schedule.merge_due(group.round + 1)
            if self.chain.now() < deadline:
                return GroupResult(GroupOutcome.WAITING)  # seeds may come until the deadline
            return GroupResult(
                GroupOutcome.SETTLED,
                f"abandoned: {len(submitted) - len(seeds)} of the {len(submitted)} miners who "
                "submitted revealed no mask seeds by a quarter round after the close, so the "
                "masks cannot be taken out; no update was opened, and the next round re-runs "
                "with fresh masks",
            )
        base_weights = self.scorer.verdict(view, group.base).weights
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
                return GroupResult(GroupOutcome.SETTLED, f"abandoned: {exc}")
        merged = apply_mean(base_weights, summed, len(submitted))
        validation = self.scorer.sealed_validation(task_id, view.spec)
        model = self.scorer.architecture(view, architecture_of(view.records, group.base))
        merged_score = self.scorer.score_arrays(model, merged, validation, view.spec)
        base_score = self.scorer.score(view, model, group.base, validation)
        if merged_score < base_score:
            return GroupResult(
                GroupOutcome.SETTLED,
                f"the mean of {len(submitted)} updates scores {merged_score}, below its base's "
                f"{base_score}: not posted, and the next round builds on the base again",
            )
        kept = tuple(sorted(r.node_id for r in submitted.values()))
        samples = sum(credited_samples(view.spec, r) for r in submitted.values())
        node_id = self._post_merge(
            task_id, view, group.round, kept, to_tensors(merged), merged_score, samples
        )
        recovered = f", drop-outs: {len(dropped)}" if dropped else ""
        return GroupResult(
            GroupOutcome.POSTED,
            f"round {group.round}: posted merge {node_id}, the decrypted sum of {list(kept)} on "
            f"{group.base} (score {merged_score}, base {base_score}{recovered})",
        )

    def _aggregated(self, view: TaskView, round_index: int, base: int) -> bool:
        """Whether the group (round, base) has its merge posted."""
        return any(
            merge.round == round_index and view.records[merge.parents[0]].parents[0] == base
            for merge in of_kind(view.records, NodeKind.MERGE)
            if view.records[merge.parents[0]].kind is NodeKind.UPDATE
        )

    def _paillier_key(self, aggregation: Aggregation) -> paillier.PaillierPrivateKey:
        if self._paillier is None:
            self._paillier = paillier_key(self.account)
        public, private = self._paillier
        if public.n != int(aggregation.paillier_n, 16):
            raise MarketplaceError("the task's Paillier key is not this evaluator's")
        return private

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
        view = self.scorer.view(task_id)
        spec = view.spec
        file = self.scorer.revealed_file(task_id, spec)
        if file is None:
            raise MarketplaceError(f"task {task_id}'s validation set is not revealed yet")
        dataset = load_dataset(file, spec, "the revealed validation file")
        scorings = self.scorer.scorings
        scores: dict[int, Score] = unconfirmed(self.chain, task_id, view.records)
        for node_id in sorted(view.records):
            if node_id in scores:  # a merge short of the quorum: not fetched, not scored
                continue
            if self.scorer.verdict(view, node_id).sealed:  # seen only in its round's sum: it stands
                parent = scores[view.records[node_id].parents[0]]  # at its base's score
                scores[node_id] = Score(node_id=node_id, valid=True, value=parent.value)
            else:
                scores[node_id] = self.scorer.node_result(view, node_id, dataset)
        coalitions, added = self.scorer.evidence(view, scores, dataset)
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
            scorings=self.scorer.scorings - scorings,
            delivery=self._deliver(view, task_id, winner),
        )

    def _deliver(self, view: TaskView, task_id: int, winner: int | None) -> Delivery | None:
        """The winner sealed to the sponsor and uploaded (DESIGN.md, "Delivery")."""
        if winner is None:
            return None
        weights = self.scorer.verdict(view, winner).weights
        assert weights is not None  # the winner is a valid merge or architecture
        with self.watch.measure("storage"):
            return deliver(
                self.store, self.account, view.spec, task_id, winner, weights, self.chain_id
            )
