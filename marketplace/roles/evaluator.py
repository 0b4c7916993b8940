"""The evaluator process: each round's merge while the task runs, then the payouts.

`Evaluator.step(task_id)` does whatever the task's phase calls for and is safe to repeat:

- rounds closed and not merged: for each architecture the round's updates built on, check
  every update, `merge_round` them on the sealed validation set (`roles.merging`), seal the
  merge to the evaluators, the sponsor and the registered miners, upload and post it (another
  evaluator's merge is confirmed instead, only once its blob is fetched, opened and found to be
  this evaluator's merge bit for bit); a secure aggregation round's groups are summed and
  opened by the key holder (`roles.group_sums`), and their means posted;
- after the reveal: the payout report (`roles.settlement`: every node decided and scored on the
  revealed file, the coalition and added scores, the payouts by the reward rule, the delivery),
  uploaded, and its root posted. A merge the quorum had not confirmed by the reveal is not
  fetched or scored: its verdict is `unconfirmed` (`rewards.unconfirmed_merges`).

What is judged comes from this evaluator's `Scorer`; this module holds what needs the account:
signing and posting merges, confirmations and the root, and the state file.

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
from typing import TYPE_CHECKING

from phe import paillier

from marketplace.errors import MarketplaceError, ValidationUnavailable
from marketplace.protocol.reports import posted_reports
from marketplace.protocol.tasks import (
    account_key,
    encode_merge,
    merge_readers,
    nodes_by_id,
    of_kind,
    paillier_key,
    seal_merge,
)
from marketplace.protocol.verdicts import NODE_ERRORS, Verdict
from marketplace.roles.group_sums import GroupMean, GroupOutcome, has_merge, open_group
from marketplace.roles.merging import recomputed, scored_merge
from marketplace.roles.scorer import Scorer, TaskView
from marketplace.roles.settlement import payout_report
from marketplace.rules.dag import architecture_of
from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import Clock
from marketplace.rules.merge import MergeResult
from marketplace.rules.messages import Aggregation, NodeKind, NodeRecord, Phase, Score
from marketplace.runtime.connect import Connected, Connection
from marketplace.runtime.faults import crash_point
from marketplace.runtime.state import StateFile
from marketplace.runtime.timing import Stopwatch
from marketplace.wire.codec import to_tensors, weights_digest
from marketplace.wire.crypto import sha256
from marketplace.wire.keys import X25519KeyPair
from marketplace.wire.report import MAX_REPORT_BYTES, PayoutReport

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class Evaluator(Connected):
    """One of a task's evaluators: the process that posts what its `Scorer` finds (the round
    merges or their confirmations, the secure aggregation sums, the payout report and root).

    Args:
        conn: the market (chain, store, chain id) and the account that signs transactions and
            merges; its `account_key` reads sealed blobs.
        state: this evaluator's state file (None: score and check, never post).
        key: the X25519 key that reads sealed blobs (default: the account's `account_key`).
        clock: times each scoring against the task's `scoring_seconds` (tests pass a fake).
    """

    def __init__(
        self,
        conn: Connection,
        state: StateFile | None,
        watch: Stopwatch | None = None,
        key: X25519KeyPair | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(conn)
        self.state = state
        self.watch = watch or Stopwatch()
        key = key or account_key(conn.account)
        self.scorer = Scorer(conn.chain, conn.store, key, conn.chain_id, self.watch, clock)
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
            if recomputed(self.scorer, view, record, model, round_index, result, plain_digest):
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
        """The merge this evaluator posts for a round's `updates` of one architecture
        (`merging.scored_merge`): the step a rogue evaluator's tests replace."""
        return scored_merge(self.scorer, task_id, view, arch_id, updates)

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
            if marker in self._finished or has_merge(view, round_index, base):
                continue
            result = open_group(
                self.scorer, lambda: self._paillier_key(aggregation), task_id, view, group
            )
            if result.mean is not None:
                done.append(self._post_mean(task_id, view, result.mean))
            elif result.outcome is GroupOutcome.SETTLED:  # nothing will change for this group
                self._finished.add(marker)
                done.append(f"round {round_index}, base {base}: {result.line}")
        return done

    def _post_mean(self, task_id: int, view: TaskView, mean: GroupMean) -> str:
        node_id = self._post_merge(
            task_id, view, mean.round, mean.kept, to_tensors(mean.weights), mean.score, mean.samples
        )
        recovered = f", drop-outs: {mean.dropped}" if mean.dropped else ""
        return (
            f"round {mean.round}: posted merge {node_id}, the decrypted sum of {list(mean.kept)} "
            f"on {mean.base} (score {mean.score}, base {mean.base_score}{recovered})"
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
        """Every node decided and scored on the revealed validation file, and the payouts
        (`settlement.payout_report`)."""
        return payout_report(self.scorer, self.account, self.chain_id, task_id)
