"""The payout reports of a task as the chain posted them: which roots were posted with which
report, reading and checking each one (`wire.report` holds the format and the checks on the
bytes), the report to show, the agreed report, and claiming a leaf of it."""

from __future__ import annotations

from collections.abc import Iterator

from marketplace.chain.client import ChainClient
from marketplace.chain.events import PayoutRootPosted
from marketplace.errors import IntegrityError, MarketplaceError, NoMatchingReport
from marketplace.storage.stores import BlobStore
from marketplace.wire.report import (
    MAX_REPORT_BYTES,
    PayoutEntry,
    PayoutReport,
    PostedRoot,
    ReportCheck,
    check_report_bytes,
    refused,
)


def posted_reports(chain: ChainClient, task_id: int) -> dict[str, tuple[bytes, int, str]]:
    """Evaluator -> (root, total, report CID) of every PayoutRootPosted of the task."""
    return {
        e.evaluator: (e.root, e.total, e.report_cid)
        for e in chain.events(PayoutRootPosted, task_id=task_id)
    }


def posted_roots(chain: ChainClient, task_id: int) -> list[PostedRoot]:
    """Every posted root of the task, the agreed root's first, else in the order posted."""
    agreed = chain.task(task_id)
    posted = [
        PostedRoot(evaluator, root, total, cid)
        for evaluator, (root, total, cid) in posted_reports(chain, task_id).items()
    ]
    settled = agreed.agreed_at != 0
    return sorted(
        posted,
        key=lambda p: (
            not (settled and (p.root, p.total) == (agreed.payout_root, agreed.payout_total))
        ),
    )


def shown_report(chain: ChainClient, store: BlobStore, task_id: int) -> PayoutReport | None:
    """The report to show for a task: the agreed root's, else the first posted one that
    matches its own root (the API's `report_of` asks its index the same)."""
    checks = (read_report(store, posted, task_id) for posted in posted_roots(chain, task_id))
    return next((check.report for check in checks if check.matches), None)


def read_report(store: BlobStore, posted: PostedRoot, task_id: int) -> ReportCheck:
    """Fetch, parse and check the report of one posted root. Never raises for what the
    evaluator or the store did: a report that cannot be had or does not match says why."""
    if not posted.cid:
        return ReportCheck(posted, None, "no report was posted with the root")
    try:
        data = store.get(posted.cid, MAX_REPORT_BYTES)
    except MarketplaceError as exc:
        return refused(ReportCheck(posted, None, f"cannot fetch {posted.cid}: {exc}"))
    return check_report_bytes(data, posted, task_id)


def agreed_checks(chain: ChainClient, store: BlobStore, task_id: int) -> Iterator[ReportCheck]:
    """Every report posted with the task's agreed root, read and checked as it is asked for,
    in the order posted (IntegrityError if the task has no agreed root yet)."""
    task = chain.task(task_id)
    if task.agreed_at == 0:
        raise IntegrityError(f"task {task_id} has no agreed payout root yet")
    agreed = (task.payout_root, task.payout_total)
    posted = [p for p in posted_roots(chain, task_id) if (p.root, p.total) == agreed]
    return (read_report(store, p, task_id) for p in posted)


def agreed_report(chain: ChainClient, store: BlobStore, task_id: int) -> PayoutReport:
    """The first report that matches the task's agreed root; every posted one is tried.

    Raises:
        IntegrityError: the task has no agreed root yet.
        NoMatchingReport: no posted report matches the agreed root (each one's reason).
    """
    reasons = []
    for check in agreed_checks(chain, store, task_id):
        if check.matches:
            assert check.report is not None
            return check.report
        reasons.append(f"{check.posted.evaluator[:10]}...'s: {check.reason}")
    raise NoMatchingReport(
        f"no report of task {task_id} matches its agreed root ({'; '.join(reasons) or 'none'})"
    )


def claim_payout(
    chain: ChainClient, store: BlobStore, sender: str, task_id: int, account: str | None = None
) -> tuple[PayoutEntry | None, bool]:
    """Claim `account`'s leaf (default: the sender's) of the agreed report, in a transaction
    `sender` signs and pays the gas of: (its entry or None, whether claimed now). The money
    goes to the leaf's account whoever sends it.

    Idempotent: a leaf already claimed (by anyone: the money goes to its account) is left.
    """
    entry = agreed_report(chain, store, task_id).entry_for(account or sender)
    if entry is None or chain.is_claimed(task_id, entry.index):
        return entry, False
    chain.claim(sender, task_id, entry.leaf(), entry.proof_bytes())
    return entry, True
