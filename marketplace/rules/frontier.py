"""The frontier: the best confirmed model of each architecture as each round opened, which
credit is measured from (DESIGN.md, "Credit for verified improvement")."""

from __future__ import annotations

from collections.abc import Mapping

from marketplace.rules.dag import architecture_of, is_valid
from marketplace.rules.messages import NodeKind, NodeRecord, Score
from marketplace.rules.shapley import Coalition


class Frontier:
    """The best confirmed model of each architecture as each round opened.

    The frontier of round r of architecture a is the best score among a itself and the valid
    merges of a's rounds before r (a round's merge is posted after the round closes): what
    every miner of round r could read and start from. An update's or merge's gain is its score
    above its round's frontier, whatever parent it names.
    """

    def __init__(self, by_id: Mapping[int, NodeRecord], scores: Mapping[int, Score], min_gain: int):
        self.by_id = by_id
        self.scores = scores
        self.min_gain = min_gain
        self.best: dict[tuple[int, int], int] = {}  # (architecture, round) -> its best merge
        for node_id in sorted(by_id):
            node = by_id[node_id]
            if node.kind is NodeKind.MERGE and is_valid(scores, node_id):
                key = (architecture_of(by_id, node_id), node.round)
                if key not in self.best or scores[node_id].value > scores[self.best[key]].value:
                    self.best[key] = node_id

    def base(self, architecture: int, round_index: int) -> int | None:
        """The frontier's node: the architecture or its best merge of an earlier round (ties:
        the latest); None if the architecture is invalid."""
        if not is_valid(self.scores, architecture):
            return None
        earlier = [
            merge
            for (arch, round_), merge in self.best.items()
            if arch == architecture and round_ < round_index
        ]
        return max([architecture, *earlier], key=lambda n: (self.scores[n].value, n))

    def at(self, architecture: int, round_index: int) -> int | None:
        """The frontier's score (None if the architecture is invalid)."""
        base = self.base(architecture, round_index)
        return None if base is None else self.scores[base].value

    def of(self, node_id: int) -> int | None:
        """The frontier of a node's round and architecture."""
        return self.at(architecture_of(self.by_id, node_id), self.by_id[node_id].round)

    def gain(self, node_id: int) -> int:
        """How far a valid update or merge rose above its frontier (0 if not, or if under
        `min_gain`: noise); 0 for an architecture or an invalid node."""
        node = self.by_id[node_id]
        base = self.of(node_id)
        if node.kind is NodeKind.ARCHITECTURE or base is None:
            return 0
        if not is_valid(self.scores, node_id):
            return 0
        gain = self.scores[node_id].value - base
        return gain if gain >= max(self.min_gain, 1) else 0

    def gaining_merges(self) -> list[int]:
        """The valid merges that rose at least `min_gain` above their frontier, by id."""
        return [
            node_id
            for node_id in sorted(self.by_id)
            if self.by_id[node_id].kind is NodeKind.MERGE and self.gain(node_id) > 0
        ]

    def members(self, merge_id: int) -> list[int]:
        """The merge's valid update parents: who shares its credit, in parent order."""
        return [
            p
            for p in self.by_id[merge_id].parents
            if self.by_id[p].kind is NodeKind.UPDATE and is_valid(self.scores, p)
        ]

    def added_coalition(self, update_id: int) -> tuple[int, Coalition] | None:
        """For an update its round's merge left out: that merge and its members with the update
        added (what `Evidence.added` scores); None if the round has no merge or kept it."""
        node = self.by_id[update_id]
        merge = self.round_merge(architecture_of(self.by_id, update_id), node.round)
        if merge is None or update_id in self.by_id[merge].parents:
            return None
        return merge, tuple(sorted((*self.members(merge), update_id)))

    def round_merge(self, architecture: int, round_index: int) -> int | None:
        """The round's best valid merge of the architecture (ties: the lowest id)."""
        return self.best.get((architecture, round_index))
