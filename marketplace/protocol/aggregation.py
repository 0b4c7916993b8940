"""Secure aggregation rounds: the protocol that `marketplace.wire.secagg`'s cryptography runs in.

A round r of a task whose spec has `aggregation` (for r) runs in two halves, and a short
unmasking step after it:

1. Join (the round's first half, enforced by the contract): each miner picks its base, the node
   it trains from (the latest merge it can read, else an architecture), and calls
   `joinRound(task, base, key)` with its per-task X25519 key (`tasks.miner_key`). It may train
   meanwhile.
2. Seal (the second half): the masked set of (r, base) is now fixed: the first join of each
   account in round r, if it named that base, in log order, the first `max_miners` of them; a
   miner's index is its place in that list. Each member seals `trained - base` (clipped,
   quantized, packed, masked against every other member, encrypted under the key holder's
   Paillier key) as a GMSA blob, uploads it, and submits it as an update of the base.
3. After the round (the key holder, an evaluator): the encrypted sum of each group's
   submissions, decrypted once; the merge is base + sum / k, the plain mean of the k clipped
   deltas (declared samples cannot weigh updates nobody sees, and the reward is split
   equally among the members, `rewards._merge_shares`). A group of one would be its member's
   update in clear: it is never aggregated, and its member does not submit.
4. Unmasking (after the round, every member that submitted): each sealed its delta under its
   own mask too (double masking, `secagg.self_mask_key`), and a member without a well-formed
   submission (a drop-out) leaves the pairwise masks it shared uncancelled. So each member
   whose submission counted reveals, once the round is closed, its own mask key and its
   pairwise keys with the drop-outs, in their join order (`revealMaskSeeds`): nothing of other
   rounds, nothing of the pairs that cancel. The key holder takes those masks out of the sum
   (`secagg.uncancelled_masks`). A member reveals only if two or more submitted (else the
   "sum" would be one update). A drop-out's submission that surfaces late (a transaction
   mined after the close, its blob already public) stays hidden by the drop-out's own mask,
   which it never reveals. Without every survivor's seeds by the end of the next round's merge
   window, a quarter round after the close (`RoundSchedule.merge_due`; inside the next round's
   join window, so the re-run can start at once), the group is abandoned, and the next round
   re-runs with fresh masks (the context binds the round).

Every mask key is bound to the round's context: chain, contract, task, round and base.

Joining costs the task's deposit (so that filling a group with joins that never submit costs
the spammer). A settled root refunds a join when its joiner's first submission of the round,
on the joined base, was valid (`join_refunds`), or when the join was not admitted to a group
(a late, repeated or unusable join, or one in a round that is not aggregated): only an
admitted member that did not submit forfeits it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from eth_utils.address import to_checksum_address
from phe import paillier

from marketplace.chain.client import ChainClient
from marketplace.chain.events import RoundJoined
from marketplace.protocol.checks import check_aggregate_update
from marketplace.protocol.verdicts import Refusal, Verdict
from marketplace.rules.dag import updates_by
from marketplace.rules.messages import (
    Aggregation,
    NodeKind,
    NodeRecord,
    Score,
    TaskSpec,
)
from marketplace.storage.stores import BlobStore
from marketplace.wire.secagg import open_sum, seal_update
from marketplace.wire.secagg_masks import MaskedRound, self_mask_key
from marketplace.wire.secagg_packing import Packing, SecAggError
from marketplace.wire.secagg_submission import decode_submission, encode_submission

MIN_MEMBERS = 2  # below this the "sum" is one update: never aggregated


@dataclass(frozen=True)
class Group:
    """The miners of one round who joined on one base, in index order, and their masks' round."""

    task_id: int
    round: int
    base: int
    members: tuple[str, ...]  # checksum addresses; member i has mask index i
    masked: MaskedRound

    def index_of(self, account: str) -> int | None:
        checksum = str(to_checksum_address(account))
        return self.members.index(checksum) if checksum in self.members else None

    @property
    def viable(self) -> bool:
        return len(self.members) >= MIN_MEMBERS


def round_context(chain_id: int, contract: str, task_id: int, round_index: int, base: int) -> bytes:
    """What every mask of the group (round, base) is bound to."""
    return (
        f"gm-secagg/v1 chain {chain_id} contract {contract.lower()} task {task_id} "
        f"round {round_index} base {base}"
    ).encode()


def round_groups(
    chain: ChainClient, chain_id: int, task_id: int, round_index: int, max_miners: int
) -> dict[int, Group]:
    """Base -> the group that joined round `round_index` on it (see the module docstring)."""
    joins = chain.round_joins(task_id, round_index)
    return groups_of(joins, chain_id, chain.address, task_id, round_index, max_miners)


def groups_of(
    joins: Sequence[RoundJoined],
    chain_id: int,
    contract: str,
    task_id: int,
    round_index: int,
    max_miners: int,
) -> dict[int, Group]:
    """Base -> group, from a round's RoundJoined events in chain order."""
    groups = {}
    for base, joined in _admitted(joins, max_miners).items():
        context = round_context(chain_id, contract, task_id, round_index, base)
        keys = {i: X25519PublicKey.from_public_bytes(key) for i, (_, key) in enumerate(joined)}
        groups[base] = Group(
            task_id, round_index, base, tuple(a for a, _ in joined), MaskedRound(context, keys)
        )
    return groups


def _admitted(joins: Sequence[RoundJoined], max_miners: int) -> dict[int, list[tuple[str, bytes]]]:
    """Base -> its members (account, mask key) in join order: the first join of each account,
    if its key is usable, the first `max_miners` on each base."""
    first: dict[str, tuple[int, bytes]] = {}
    for event in joins:
        account = str(to_checksum_address(event.account))
        first.setdefault(account, (event.base, event.mask_key))
    members: dict[int, list[tuple[str, bytes]]] = {}
    for account, (base, key) in first.items():  # dicts keep the log order
        if len(members.setdefault(base, [])) < max_miners and _agreeable(key):
            members[base].append((account, key))
    return members


def join_refunds(
    joins: Sequence[RoundJoined],
    records: Mapping[int, NodeRecord],
    scores: Mapping[int, Score],
    spec: TaskSpec,
    deposit: int,
) -> dict[str, int]:
    """Account -> the join deposits a settled root refunds it (see the module docstring), from
    the task's RoundJoined events in chain order and the settlement's scores: every evaluator
    and `verify` derive the same from public data."""
    by_round: dict[int, list[RoundJoined]] = {}
    for event in joins:
        by_round.setdefault(event.round, []).append(event)
    refunds: dict[str, int] = {}
    for round_index, events in by_round.items():
        aggregation = spec.aggregation
        members = {}
        if aggregation is not None and aggregation.applies(round_index):
            admitted = _admitted(events, aggregation.max_miners)
            members = {account: base for base, joined in admitted.items() for account, _ in joined}
        seen: set[str] = set()
        for event in events:
            account = str(to_checksum_address(event.account))
            base = event.base
            counted = account not in seen and members.get(account) == base
            seen.add(account)
            mine = updates_by(records, account, round_index)
            submitted = bool(mine) and records[mine[0]].parents[0] == base and scores[mine[0]].valid
            if not counted or submitted:  # its first update of the round, on the base, valid
                refunds[account] = refunds.get(account, 0) + deposit
    return refunds


_PROBE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _agreeable(key: bytes) -> bool:
    """Whether anyone can agree a mask with `key`: a low-order point (all zeros, say) gives
    every peer an all-zero secret, which X25519 refuses. Such a join does not count, the same
    for every reader, so it cannot stall the members' sealing."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(key))
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------ the task's parameters


def public_key(aggregation: Aggregation) -> paillier.PaillierPublicKey:
    return paillier.PaillierPublicKey(int(aggregation.paillier_n, 16))


def packing(aggregation: Aggregation) -> Packing:
    return Packing(
        aggregation.clip,
        aggregation.fraction_bits,
        aggregation.max_miners,
        key_bits=int(aggregation.paillier_n, 16).bit_length(),
    )


# ------------------------------------------------------------------ weights <-> values


def _array(value: Any) -> npt.NDArray[np.float64]:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def value_count(weights: Mapping[str, Any]) -> int:
    return sum(int(np.prod(np.shape(_array(weights[name])))) for name in weights)


def delta_values(trained: Mapping[str, Any], base: Mapping[str, Any]) -> npt.NDArray[np.float64]:
    """`trained - base`, flattened tensor by tensor in name order."""
    if set(trained) != set(base):
        raise SecAggError("the trained weights and the base have different tensors")
    parts = [(_array(trained[name]) - _array(base[name])).ravel() for name in sorted(base)]
    return np.concatenate(parts) if parts else np.zeros(0)


def apply_mean(
    base: Mapping[str, Any], summed: npt.NDArray[np.float64], members: int
) -> dict[str, npt.NDArray[np.float32]]:
    """base + summed / members, tensor by tensor in name order, as float32 (float64 first:
    every key holder gets the same bytes)."""
    merged: dict[str, npt.NDArray[np.float32]] = {}
    offset = 0
    for name in sorted(base):
        array = _array(base[name])
        part = summed[offset : offset + array.size].reshape(array.shape)
        merged[name] = (array + part / np.float64(members)).astype(np.float32)
        offset += array.size
    if offset != summed.size:
        raise SecAggError(f"a sum of {summed.size} values for weights of {offset}")
    return merged


# ------------------------------------------------------------------ the two sides


def seal_delta(
    trained: Mapping[str, Any],
    base: Mapping[str, Any],
    aggregation: Aggregation,
    own: X25519PrivateKey,
    group: Group,
    account: str,
) -> bytes:
    """A member's GMSA blob for its group: its delta, clipped, packed, masked, encrypted."""
    index = group.index_of(account)
    if index is None:
        raise SecAggError(f"{account} is not in round {group.round}'s group on {group.base}")
    if not group.viable:
        raise SecAggError(f"round {group.round}'s group on {group.base} has one member")
    values = delta_values(trained, base)
    public, layout = public_key(aggregation), packing(aggregation)
    own_mask = self_mask_key(own, group.masked.context)
    ciphertexts = seal_update(values, layout, public, own, index, group.masked, own_mask)
    return encode_submission(ciphertexts, public, layout, group.masked, values.size)


def open_group_sum(
    private: paillier.PaillierPrivateKey,
    aggregation: Aggregation,
    encrypted_sum: list[int],
    count: int,
    members: int,
    correction: Sequence[int] | None = None,
) -> npt.NDArray[np.float64]:
    """The sum of the group's `members` deltas, less `correction` (the masks that do not
    cancel: `secagg.uncancelled_masks`); SecAggError if the masks did not all come out."""
    return open_sum(private, packing(aggregation), encrypted_sum, count, members, correction)


# ------------------------------------------------------------------ deciding submissions


def submission_verdict(
    record: NodeRecord,
    records: Mapping[int, NodeRecord],
    group: Group | None,
    store: BlobStore,
    aggregation: Aggregation,
    count: int,
    max_size: int,
) -> Verdict:
    """An update of a secure aggregation round: valid when it is a member's first submission of
    the round, on its group's base, and well-formed for the group (size, key, round, layout,
    units). Valid says nothing of what it holds: that is seen only in the group's sum. The
    evaluator and every member decide the same way, from public data."""
    base = record.parents[0]
    if group is None or group.index_of(record.author) is None:
        return Verdict.refused(
            record.node_id,
            Refusal.BINDING,
            f"{record.author} did not join round {record.round} on node {base}",
        )
    if updates_by(records, record.author, record.round)[0] != record.node_id:
        return Verdict.refused(
            record.node_id, Refusal.BINDING, f"a second submission in round {record.round}"
        )
    public, layout = public_key(aggregation), packing(aggregation)
    return check_aggregate_update(
        record,
        store,
        lambda blob: decode_submission(blob, public, layout, group.masked, count),
        max_size,
    )


def submitted_members(
    group: Group, records: Mapping[int, NodeRecord], verdict: Callable[[int], Verdict]
) -> dict[int, NodeRecord]:
    """Member index -> its valid submission to the group (`verdict`: a node's verdict)."""
    submitted: dict[int, NodeRecord] = {}
    for record in records.values():
        index = group.index_of(record.author)
        in_group = record.round == group.round and record.parents[0] == group.base
        member = record.kind is NodeKind.UPDATE and in_group and index is not None
        if member and index is not None and verdict(record.node_id).valid:
            submitted[index] = record
    return submitted


def revealed_seeds(
    chain: ChainClient, group: Group, survivors: Sequence[int], dropped: Sequence[int]
) -> dict[int, list[bytes]]:
    """Survivor index -> its revealed seeds (its own mask key, then one per drop-out), from its
    first reveal for the group of the right length (a survivor that has not revealed is
    absent)."""
    seeds: dict[int, list[bytes]] = {}
    for event in chain.seed_reveals(group.task_id, group.round):
        index = group.index_of(event.account)
        keys = list(event.seeds)
        fits = event.base == group.base and len(keys) == 1 + len(dropped)
        if index is not None and index in survivors and index not in seeds and fits:
            seeds[index] = keys
    return seeds
