"""Moving blobs between stores: `marketplace blobs push` copies what a local store holds into
an IPFS node, where it resolves under the same CID (the one the chain already points at)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from marketplace.chain.client import ChainClient
from marketplace.errors import IntegrityError, SpecError
from marketplace.protocol.reports import posted_reports
from marketplace.protocol.tasks import read_spec, task_created
from marketplace.storage.stores import BlobStore, LocalStore

MAX_PUSH_BYTES = 1 << 30
"""No blob the market writes comes near this; a larger file in the folder is not ours."""


@dataclass(frozen=True)
class Pushed:
    blobs: int
    bytes: int


def task_cids(chain: ChainClient, store: BlobStore, task_id: int) -> list[str]:
    """Every CID task `task_id` points at: its spec, its sealed validation set, every node's
    blob and every posted payout report; read from the chain (and the spec, from `store`)."""
    cids = [task_created(chain, task_id).spec_cid]
    try:
        validation = read_spec(chain, store, task_id).validation_cid
    except SpecError:
        validation = ""
    cids += [validation] if validation else []
    cids += [record.cid for record in chain.nodes(task_id)]
    cids += [cid for _, _, cid in posted_reports(chain, task_id).values() if cid]
    return list(dict.fromkeys(cids))  # once each, in order


def push(
    source: LocalStore,
    target: BlobStore,
    cids: Iterable[str],
    on_blob: Callable[[str, int], None] = lambda cid, size: None,
) -> Pushed:
    """Copy each blob from `source` to `target`, which must name it by the same CID; pinned."""
    count = total = 0
    for cid in cids:
        data = source.get(cid, MAX_PUSH_BYTES)
        stored = target.put(data)
        if stored != cid:
            raise IntegrityError(f"{target!r} stored {cid} as {stored}")
        count, total = count + 1, total + len(data)
        on_blob(cid, len(data))
    return Pushed(count, total)
