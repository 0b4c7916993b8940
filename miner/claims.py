"""Getting paid: a miner's payout claimed after finalize, or its deposits refunded when the
sponsor never revealed or nobody settled. Needs the miner's `Connection` and its state file,
nothing of the training: `Miner.collect` and `miner claim` both call `collect`."""

from __future__ import annotations

from marketplace.errors import NoMatchingReport
from marketplace.protocol.reports import claim_payout
from marketplace.protocol.tasks import nodes_by_id
from marketplace.rules.messages import NodeKind, Phase
from marketplace.runtime.connect import Connection
from marketplace.runtime.state import StateFile


def collect(miner: Connection, state: StateFile, task_id: int) -> list[str]:
    """Claim the miner's payout, or its refunds; what it did, as lines. Idempotent: the state
    file records that the task is collected (`claimed`), which ends the miner's work on it."""
    chain, store, address = miner.chain, miner.store, miner.address
    phase = chain.phase(task_id)
    done: list[str] = []
    saved = state.section("tasks", task_id)
    if phase is Phase.CLAIMS:
        try:
            entry, claimed = claim_payout(chain, store, address, task_id)
        except NoMatchingReport as exc:  # every report missing or lying: try next pass
            return [str(exc)]
        saved["claimed"] = "nothing owed" if entry is None else entry.amount
        state.save()
        if entry is not None and claimed:
            ether = entry.amount / 10**18
            done.append(f"claimed {ether:.6f} (leaf {entry.index}, {entry.points} points)")
    elif phase in (Phase.UNREVEALED, Phase.UNSETTLED):
        for record in nodes_by_id(chain, task_id).values():
            mine = record.author.lower() == address.lower()
            refundable = mine and record.kind is not NodeKind.MERGE
            if refundable and not chain.is_refunded(task_id, record.node_id):
                chain.refund(address, task_id, record.node_id)
                done.append(f"refunded node {record.node_id}")
        saved["claimed"] = "refunded"
        state.save()
    return done
