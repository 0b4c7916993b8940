"""The payout report an evaluator posts once the validation set is revealed.

Every node is decided and scored on the revealed file (a merge the quorum had not confirmed by
the reveal is not fetched or scored: its verdict is `unconfirmed`, `tasks.unconfirmed`; a secure
aggregation update, seen only in its round's sum, stands at its base's score), then the
coalition and added scores (`marketplace.roles.coalitions`), the payouts by the reward rule,
and the winner sealed to the sponsor and uploaded (DESIGN.md, "Delivery"). Uploading the report
and posting its root is the evaluator process's (`Evaluator.settle`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eth_account.signers.local import LocalAccount

from marketplace.delivered.delivery import deliver
from marketplace.errors import MarketplaceError
from marketplace.protocol.aggregation import join_refunds
from marketplace.protocol.tasks import unconfirmed
from marketplace.roles.coalitions import evidence
from marketplace.roles.scorer import Scorer, TaskView, load_dataset
from marketplace.rules.datafiles import Dataset
from marketplace.rules.evaluation import ceiling
from marketplace.rules.messages import NodeRecord, Score
from marketplace.rules.models import flops_per_sample
from marketplace.rules.rewards import Evidence, compute_payouts, find_winner, node_gains
from marketplace.wire.crypto import sha256
from marketplace.wire.report import (
    Delivery,
    NodeVerdict,
    PayoutReport,
    coalition_key,
    payout_entries,
)


def payout_report(
    scorer: Scorer, account: LocalAccount, chain_id: int, task_id: int
) -> PayoutReport:
    """Every node decided and scored on the revealed validation file, and the payouts; the
    winner is delivered, sealed by `account` (the evaluator's)."""
    chain = scorer.chain
    view = scorer.view(task_id)
    spec = view.spec
    file = scorer.revealed_file(task_id, spec)
    if file is None:
        raise MarketplaceError(f"task {task_id}'s validation set is not revealed yet")
    dataset = load_dataset(file, spec, "the revealed validation file")
    scorings = scorer.scorings
    scores = settlement_scores(scorer, view, task_id, dataset)
    coalitions, added = evidence(scorer, view, scores, dataset)
    # Every architecture whose verdict is valid: one whose own scoring timed out (on this
    # machine) still prices its updates' compute.
    flops = {arch_id: flops_per_sample(model) for arch_id, model in view.architectures.items()}
    task = chain.task(task_id)
    records = list(view.records.values())
    joins = join_refunds(chain.round_joins(task_id), view.records, scores, spec, task.deposit)
    proof = Evidence(coalitions, added, flops, ceiling(dataset, spec.metric))
    payouts = compute_payouts(records, scores, proof, spec, task.bounty, task.deposit, joins)
    entries, root, total = payout_entries(payouts)
    winner = find_winner(records, scores)
    return PayoutReport(
        task_id=task_id,
        chain_id=chain_id,
        contract=chain.address,
        evaluator=str(account.address),
        validation_digest=sha256(file).hex(),
        winner=winner,
        nodes=_node_verdicts(records, scores),
        coalitions={
            merge_id: {coalition_key(c): value for c, value in table.items()}
            for merge_id, table in coalitions.items()
        },
        added=added,
        flops_per_sample=flops,
        ceiling=proof.ceiling,
        payouts=entries,
        root="0x" + root.hex(),
        total=total,
        scorings=scorer.scorings - scorings,
        delivery=_deliver(scorer, account, chain_id, view, task_id, winner),
    )


def settlement_scores(
    scorer: Scorer, view: TaskView, task_id: int, dataset: Dataset
) -> dict[int, Score]:
    """Node id -> its verdict and score on the revealed `dataset`, in node id order."""
    scores: dict[int, Score] = unconfirmed(scorer.chain, task_id, view.records)
    for node_id in sorted(view.records):
        if node_id in scores:  # a merge short of the quorum: not fetched, not scored
            continue
        if scorer.verdict(view, node_id).sealed:  # seen only in its round's sum: it stands
            parent = scores[view.records[node_id].parents[0]]  # at its base's score
            scores[node_id] = Score(node_id=node_id, valid=True, value=parent.value)
        else:
            scores[node_id] = scorer.node_result(view, node_id, dataset)
    return scores


def _node_verdicts(
    records: Sequence[NodeRecord], scores: Mapping[int, Score]
) -> tuple[NodeVerdict, ...]:
    """Each node as the report lists it: its place in the tree, verdict, score and gain."""
    gains = node_gains(records, scores)
    return tuple(
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


def _deliver(
    scorer: Scorer,
    account: LocalAccount,
    chain_id: int,
    view: TaskView,
    task_id: int,
    winner: int | None,
) -> Delivery | None:
    """The winner sealed to the sponsor and uploaded (DESIGN.md, "Delivery")."""
    if winner is None:
        return None
    weights = scorer.verdict(view, winner).weights
    assert weights is not None  # the winner is a valid merge or architecture
    with scorer.watch.measure("storage"):
        return deliver(scorer.store, account, view.spec, task_id, winner, weights, chain_id)
