"""A miner's part in secure aggregation rounds (marketplace.protocol.aggregation): join the round
on a base, seal the delta against the group fixed at the midpoint, and after the round reveal
the mask seeds that let the key holder open the group's sum.

Training stays with `Miner`: this module decides when and on what the miner joins, what it
seals and what it reveals, and keeps the round's groups between sealing and revealing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketplace.chain.events import RoundJoined
from marketplace.protocol.aggregation import (
    MIN_MEMBERS,
    Group,
    groups_of,
    round_groups,
    seal_delta,
    submission_verdict,
    submitted_members,
)
from marketplace.protocol.tasks import miner_key, nodes_by_id, of_kind, read_spec
from marketplace.rules.messages import (
    Aggregation,
    NodeKind,
    NodeRecord,
    TaskSpec,
)
from marketplace.runtime.connect import Connected, Connection
from marketplace.runtime.timing import Stopwatch
from marketplace.wire.secagg_masks import mask_key, self_mask_key
from marketplace.wire.secagg_submission import submission_values
from miner.open_round import OpenRound
from miner.parents import ParentChooser, Waiting
from miner.saved_rounds import RoundStatus, SavedRounds

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Joined:
    """This miner is in the round on node `base`; `joins`: the round's RoundJoined events as
    read (every one, once the midpoint has passed)."""

    base: int
    joins: Sequence[RoundJoined]


@dataclass(frozen=True)
class SeedReveal:
    """What revealing a round's mask seeds did: `line` says it, `revealed` if seeds went out."""

    revealed: bool
    line: str


class SecureRounds(Connected):
    """One miner's joins, sealed deltas and mask seed reveals.

    Args:
        conn: the market and the miner's account; its per-task key agrees the masks (groups
            and envelopes are bound to the chain id).
        rounds: the miner's saved rounds (joined, not aggregated, seeds settled).
        parents: what the miner joins on, and whether to wait for a merge first.
        watch: transactions are timed under "chain".
    """

    def __init__(
        self,
        conn: Connection,
        rounds: SavedRounds,
        parents: ParentChooser,
        watch: Stopwatch,
    ) -> None:
        super().__init__(conn)
        self.rounds = rounds
        self.parents = parents
        self.watch = watch
        self._groups: dict[tuple[int, int], dict[int, Group]] = {}  # (task, round) -> groups

    def join(self, current: OpenRound, saved: dict[str, object]) -> Joined | Waiting | None:
        """This miner's place in the round: joined before (on the base its RoundJoined
        names), or joined now, in the round's first half, on the parent it would train on once
        the previous round's merge is readable or its merge window has passed. `Waiting` until
        then; None once the midpoint passed without it (the masks are fixed)."""
        task_id, round_index = current.task_id, current.index
        joins = self.chain.round_joins(task_id, round_index)
        mine = [e for e in joins if e.account.lower() == self.address.lower()]
        if mine:
            return Joined(mine[0].base, joins)
        if current.now >= current.task.schedule.midpoint(round_index):
            log.info("task %d round %d: joined too late; the masks are fixed", task_id, round_index)
            return None
        waiting = self.parents.merge_wait(current)
        if waiting is not None:
            return waiting
        base, _, _ = self.parents.choose(task_id, current.records, current.spec)
        key = miner_key(self.account, task_id)
        with self.watch.measure("chain"):
            self.chain.join_round(self.address, task_id, base, key.public_bytes)
        self.rounds.mark(saved, RoundStatus.JOINED, base=base)
        log.info("task %d round %d: joined the aggregation on node %d", task_id, round_index, base)
        return Joined(base, joins)

    def group(
        self,
        task_id: int,
        round_index: int,
        joined: Joined,
        aggregation: Aggregation,
        saved: dict[str, object],
    ) -> Group | None:
        """This miner's group, past the midpoint (nobody joins after it); None, recorded as
        not aggregated, if the group is full or this miner is alone in it."""
        groups = groups_of(
            joined.joins,
            self.chain_id,
            self.chain.address,
            task_id,
            round_index,
            aggregation.max_miners,
        )
        self._groups[(task_id, round_index)] = groups  # final: nobody joins after the midpoint
        group = groups.get(joined.base)
        if group is None or group.index_of(self.address) is None or not group.viable:
            admitted = group is not None and group.index_of(self.address) is not None
            why = "alone in the group: its sum would be this update" if admitted else "full"
            log.info("task %d round %d: not submitting (%s)", task_id, round_index, why)
            self.rounds.mark(saved, RoundStatus.NOT_AGGREGATED)
            return None
        return group

    def seal(
        self,
        task_id: int,
        group: Group,
        trained: Mapping[str, torch.Tensor],
        base: Mapping[str, torch.Tensor],
        aggregation: Aggregation,
    ) -> bytes:
        """The clipped, packed and masked delta `trained - base`, for the group's sum."""
        key = miner_key(self.account, task_id)
        return seal_delta(trained, base, aggregation, key.private_key, group, self.address)

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
            for r in task.schedule.closed(now)
            if spec.aggregates(r) and self.rounds.reveal_pending(task_id, r)
        ]
        if not pending:
            return []
        records = nodes_by_id(self.chain, task_id)
        done = []
        for record in of_kind(records, NodeKind.UPDATE):
            mine = record.author.lower() == self.address.lower()
            if not (mine and record.round in pending):
                continue
            if not self.rounds.reveal_pending(task_id, record.round):
                continue  # settled for another of this account's updates in the round
            reveal = self._reveal_for(task_id, record, records, aggregation, spec)
            # settled, whatever it said: not looked at again
            self.rounds.reveal_settled(task_id, record.round, reveal.line)
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
        """Reveal the seeds for `record`'s round if this submission counted in a group where
        enough members submitted: its own mask key and those it shares with the drop-outs."""
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
