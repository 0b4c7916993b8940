"""A secure aggregation group's sum opened by the key holder, into the mean it would post.

A group (the miners who joined a round on one base) is summed under Paillier: its members'
well-formed submissions are added unread, the masks of members who dropped out are taken off
with the seeds the survivors revealed, and the key holder's private key opens the sum. The
mean is applied to the base and scored on the sealed validation set; it is posted only if it
does not score below its base. `open_group` says what this pass came to (`GroupResult`); the
evaluator process (`marketplace.roles.evaluator`) posts the mean. Nothing here signs or posts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt
from phe import paillier

from marketplace.protocol.aggregation import (
    MIN_MEMBERS,
    Group,
    apply_mean,
    open_group_sum,
    packing,
    public_key,
    revealed_seeds,
    submitted_members,
    value_count,
)
from marketplace.protocol.tasks import of_kind
from marketplace.roles.scorer import Scorer, TaskView, credited_samples
from marketplace.rules.dag import architecture_of
from marketplace.rules.messages import NodeKind, NodeRecord
from marketplace.wire.secagg import sum_round
from marketplace.wire.secagg_masks import uncancelled_masks
from marketplace.wire.secagg_packing import SecAggError
from marketplace.wire.secagg_submission import decode_submission

PrivateKey = Callable[[], paillier.PaillierPrivateKey]
"""The key holder's Paillier private key, asked for only when a sum is to be opened."""


class GroupOutcome(Enum):
    """What opening a secure aggregation group's sum came to, this pass."""

    MEAN = "mean"  # the sum opened and its mean does not score below the base: to post
    WAITING = "waiting"  # members may still reveal their mask seeds: look again next pass
    SETTLED = "settled"  # abandoned, or its mean does not improve: nothing will change


@dataclass(frozen=True)
class GroupMean:
    """A group's mean applied to its base, scored: the merge to post."""

    round: int
    base: int
    kept: tuple[int, ...]  # the members who submitted, by node id
    weights: dict[str, npt.NDArray[np.float32]]
    score: int
    base_score: int
    samples: int  # credited, summed over the kept members
    dropped: int  # members who joined and submitted nothing well-formed


@dataclass(frozen=True)
class GroupResult:
    outcome: GroupOutcome
    line: str = ""  # why it settled, for the evaluator's output ("" otherwise)
    mean: GroupMean | None = None  # set exactly when the outcome is MEAN


def open_group(
    scorer: Scorer, private_key: PrivateKey, task_id: int, view: TaskView, group: Group
) -> GroupResult:
    """What the group's sum comes to this pass: settled (one member, too few submissions, seeds
    never revealed), waiting (seeds may still come before the merge deadline), or its mean."""
    if not group.viable:
        return GroupResult(GroupOutcome.SETTLED, "one miner joined: nothing to aggregate")
    submitted = submitted_members(
        group, view.records, lambda node_id: scorer.verdict(view, node_id)
    )
    dropped = [i for i in range(len(group.members)) if i not in submitted]
    if len(submitted) < MIN_MEMBERS:
        return GroupResult(
            GroupOutcome.SETTLED,
            f"abandoned: {len(submitted)} of {len(group.members)} miners who joined submitted "
            "a well-formed update, and a sum needs two (a sum of one is that update)",
        )
    seeds = revealed_seeds(scorer.chain, group, sorted(submitted), dropped)
    if len(seeds) < len(submitted):
        deadline = scorer.chain.task(task_id).schedule.merge_due(group.round + 1)
        if scorer.chain.now() < deadline:
            return GroupResult(GroupOutcome.WAITING)  # seeds may come until the deadline
        return GroupResult(
            GroupOutcome.SETTLED,
            f"abandoned: {len(submitted) - len(seeds)} of the {len(submitted)} miners who "
            "submitted revealed no mask seeds by a quarter round after the close, so the "
            "masks cannot be taken out; no update was opened, and the next round re-runs "
            "with fresh masks",
        )
    return _mean(scorer, private_key, task_id, view, group, submitted, dropped, seeds)


def _mean(
    scorer: Scorer,
    private_key: PrivateKey,
    task_id: int,
    view: TaskView,
    group: Group,
    submitted: dict[int, NodeRecord],
    dropped: list[int],
    seeds: dict[int, list[bytes]],
) -> GroupResult:
    """The sum of the `submitted` members' ciphertexts opened, its mean applied and scored."""
    aggregation = view.spec.aggregation
    assert aggregation is not None
    base_weights = scorer.verdict(view, group.base).weights
    assert base_weights is not None  # members' verdicts are valid only on a valid base
    count = value_count(base_weights)
    public, layout = public_key(aggregation), packing(aggregation)
    ciphertexts = {
        i: decode_submission(
            scorer.store.get(r.cid, view.spec.max_blob_bytes), public, layout, group.masked, count
        )
        for i, r in submitted.items()
    }
    with scorer.watch.measure("aggregation"):
        encrypted = sum_round(public, group.masked, ciphertexts, dropped)
        correction = uncancelled_masks(seeds, dropped, len(encrypted), public.n)
        try:
            summed = open_group_sum(
                private_key(), aggregation, encrypted, count, len(submitted), correction
            )
        except SecAggError as exc:
            return GroupResult(GroupOutcome.SETTLED, f"abandoned: {exc}")
    merged = apply_mean(base_weights, summed, len(submitted))
    validation = scorer.sealed_validation(task_id, view.spec)
    model = scorer.architecture(view, architecture_of(view.records, group.base))
    merged_score = scorer.score_arrays(model, merged, validation, view.spec)
    base_score = scorer.score(view, model, group.base, validation)
    if merged_score < base_score:
        return GroupResult(
            GroupOutcome.SETTLED,
            f"the mean of {len(submitted)} updates scores {merged_score}, below its base's "
            f"{base_score}: not posted, and the next round builds on the base again",
        )
    kept = tuple(sorted(r.node_id for r in submitted.values()))
    samples = sum(credited_samples(view.spec, r) for r in submitted.values())
    mean = GroupMean(
        group.round, group.base, kept, merged, merged_score, base_score, samples, len(dropped)
    )
    return GroupResult(GroupOutcome.MEAN, mean=mean)


def has_merge(view: TaskView, round_index: int, base: int) -> bool:
    """Whether the group (round, base) has its merge posted."""
    return any(
        merge.round == round_index and view.records[merge.parents[0]].parents[0] == base
        for merge in of_kind(view.records, NodeKind.MERGE)
        if view.records[merge.parents[0]].kind is NodeKind.UPDATE
    )
