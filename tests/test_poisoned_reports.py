"""Issue 14, attack 7: a payout report that lies (a leaf whose index is not its position, leaves
that do not add up to the posted total, a blob that is no report...) is "not matching" for
every client: the indexer, the API over it, `claim_payout`, `Miner.collect` and `verify` try
every posted report, say why the poisoned ones do not match, and carry on with the honest one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketplace.chain.events import Claimed, PayoutRootPosted
from marketplace.dev.devchain import advance_to, now
from marketplace.errors import BlobNotFound, NoMatchingReport
from marketplace.protocol.reports import agreed_report, claim_payout, posted_roots
from marketplace.protocol.tasks import account_key
from marketplace.roles import coalitions as coalitions_module
from marketplace.roles.verify import verify_task
from marketplace.rules.messages import NodeKind, Phase
from marketplace.service.api import create_app
from marketplace.service.indexer import Indexer
from marketplace.wire.crypto import PayoutLeaf, payout_tree
from marketplace.wire.report import (
    MAX_REPORT_BYTES,
    NodeVerdict,
    PayoutEntry,
    PayoutReport,
    PostedRoot,
    check_report_bytes,
)
from tests.market import Market, new_market

# ------------------------------------------------------------------ the check, on its own

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b2" * 20


def honest() -> tuple[PayoutReport, PostedRoot]:
    """A consistent two-leaf report of task 1 and the root it was posted with."""
    leaves = [PayoutLeaf(0, ALICE, 3, 1), PayoutLeaf(1, BOB, 4, 2)]
    tree = payout_tree(leaves)
    entries = tuple(
        PayoutEntry(
            index=leaf.index,
            account=leaf.account,
            amount=leaf.amount,
            points=leaf.points,
            proof=tuple("0x" + step.hex() for step in tree.proof(leaf.index)),
        )
        for leaf in leaves
    )
    report = PayoutReport(
        task_id=1,
        chain_id=1,
        contract="0x" + "00" * 20,
        evaluator=ALICE,
        validation_digest="00" * 32,
        winner=1,
        nodes=(
            NodeVerdict(
                node_id=1, kind=NodeKind.ARCHITECTURE, author=ALICE, parents=(0,), valid=True
            ),
        ),
        payouts=entries,
        root="0x" + tree.root.hex(),
        total=7,
    )
    return report, PostedRoot("0xEvil", tree.root, 7, "cid")


def lie(**changes: object) -> bytes:
    report, _ = honest()
    return report.model_copy(update=changes).to_bytes()


def leaf(position: int, **changes: object) -> tuple[PayoutEntry, ...]:
    report, _ = honest()
    payouts = list(report.payouts)
    payouts[position] = payouts[position].model_copy(update=changes)
    return tuple(payouts)


def test_an_honest_report_matches_its_root() -> None:
    report, posted = honest()
    check = check_report_bytes(report.to_bytes(), posted, 1)
    assert (check.matches, check.reason, check.report) == (True, "", report)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a payout report: Invalid JSON: EOF while parsing a value at line 1 column 0"),
        (b"[]", "not a payout report: Input should be an object"),
        (
            b" " * (MAX_REPORT_BYTES + 1),
            f"the report is {MAX_REPORT_BYTES + 1:,} bytes, over {MAX_REPORT_BYTES:,}",
        ),
        (lie(task_id=2), "the report is for task 2, not 1"),
        (lie(total=8), "the report says root 0x"),
        (
            lie(payouts=tuple(reversed(honest()[0].payouts))),
            "leaf at position 0 has index 1",
        ),
        (lie(payouts=leaf(1, index=0)), "leaf at position 1 has index 0"),
        (lie(payouts=leaf(0, amount=-3)), "leaf 0: amount -3 or points 1 not uint256"),
        (lie(payouts=leaf(0, points=2**256)), f"leaf 0: amount 3 or points {2**256} not uint256"),
        (lie(payouts=leaf(0, account="0x12")), "leaf 0: account '0x12' is not an address"),
        (lie(payouts=leaf(1, account=ALICE.upper().replace("X", "x"))), "leaf 1: account"),
        (lie(payouts=leaf(1, amount=5)), "the leaves add up to 8, not the posted total 7"),
        (lie(payouts=leaf(1, amount=4, points=3)), "the leaves hash to 0x"),
        (lie(payouts=leaf(1, proof=("0xzz",))), "leaf 1: its proof is not the tree's"),
        (lie(payouts=()), "the leaves add up to 0, not the posted total 7"),
        (lie(nodes=honest()[0].nodes * 2), "a node is listed twice"),
    ],
    ids=[
        "empty",
        "not-an-object",
        "oversized",
        "other-task",
        "other-total",
        "index-not-position",
        "duplicate-index",
        "negative-amount",
        "oversized-points",
        "not-an-address",
        "repeated-account",
        "sum-not-total",
        "other-root",
        "bad-proof",
        "no-leaves",
        "duplicate-node",
    ],
)
def test_a_lying_report_does_not_match_and_says_why(data: bytes, reason: str) -> None:
    _, posted = honest()
    check = check_report_bytes(data, posted, 1)
    assert not check.matches
    assert check.reason.startswith(reason), check.reason


# ------------------------------------------------------------------ the attack, on-chain


@pytest.fixture
def poisoned(tmp_path: Path) -> tuple[Market, PayoutReport]:
    """A 2-of-3 task settled with the honest evaluator's root; the rogue posted the same root
    first, with a report whose leaves are out of order, and the third evaluator posted another
    root with a report whose leaves add up to more than its total. (market, the honest report)"""
    market = new_market(tmp_path)
    honest_account, liar, rogue = market.evaluator_account, market.keys[3], market.keys[7]
    market.create(rounds=1, evaluators=[honest_account, liar, rogue], quorum=2)
    market.propose()
    evaluators = [market.make_evaluator(honest_account), market.make_evaluator(liar)]
    market.add_miners(2, epochs=5)  # both updates improve on the architecture: both are owed
    for miner in market.miners:
        miner.submit_round(market.task_id)
    advance_to(market.w3, market.chain.task(market.task_id).round_end(0))
    for evaluator in evaluators:
        evaluator.step(market.task_id)  # posts the merge, confirms it
    market.reveal()
    chain, store, task_id = market.chain, market.store, market.task_id

    truth = market.make_evaluator(rogue).evaluate(task_id)  # what the honest one will post
    assert len(truth.payouts) >= 2
    root = bytes.fromhex(truth.root[2:])
    out_of_order = truth.model_copy(update={"payouts": tuple(reversed(truth.payouts))})
    chain.post_payout_root(
        rogue.address, task_id, root, truth.total, store.put(out_of_order.to_bytes())
    )
    (line,) = evaluators[0].step(task_id)
    assert line.startswith(f"posted the payout root {truth.root}")
    assert chain.task(task_id).payout_root == root  # the rogue's vote and the honest one agree

    # The liar's leaves: all of the total to itself, and then some.
    lying_leaf = PayoutLeaf(0, liar.address, truth.total + 1, 0)
    lying = truth.model_copy(
        update={
            "payouts": (
                PayoutEntry(index=0, account=liar.address, amount=truth.total + 1, points=0),
            ),
            "root": "0x" + payout_tree([lying_leaf]).root.hex(),
        }
    )
    chain.post_payout_root(
        liar.address,
        task_id,
        payout_tree([lying_leaf]).root,
        truth.total,
        store.put(lying.to_bytes()),
    )
    market.finalize()
    assert chain.phase(task_id) is Phase.CLAIMS
    return market, truth


def test_claims_skip_a_poisoned_report_of_the_agreed_root_and_pay_the_honest_leaves(
    poisoned: tuple[Market, PayoutReport],
) -> None:
    market, truth = poisoned
    chain, task_id = market.chain, market.task_id
    order = [p.evaluator for p in posted_roots(chain, task_id)]
    assert order == [
        market.keys[7].address,
        market.evaluator_account.address,
        market.keys[3].address,
    ]
    agreed = agreed_report(chain, market.store, task_id)  # the rogue's, out of order, skipped
    assert (agreed.evaluator, agreed.payouts) == (market.evaluator_account.address, truth.payouts)

    first, second = market.miners
    owed = {entry.account: entry for entry in truth.payouts}
    escrow = chain.balance(chain.address)
    assert first.collect(task_id) == [
        f"claimed {owed[first.address].amount / 10**18:.6f} (leaf {owed[first.address].index}, "
        f"{owed[first.address].points} points)"
    ]
    assert first.state.section("tasks", task_id)["claimed"] == owed[first.address].amount
    entry, claimed = claim_payout(chain, market.store, second.address, task_id)
    assert (entry, claimed) == (owed[second.address], True)
    paid = [(e.account, e.amount) for e in chain.events(Claimed, task_id=task_id)]
    assert paid == [(m.address, owed[m.address].amount) for m in (first, second)]
    assert (
        chain.balance(chain.address)
        == escrow - owed[first.address].amount - owed[second.address].amount
    )


def test_a_miner_with_no_matching_report_yet_says_so_and_claims_on_a_later_pass(
    poisoned: tuple[Market, PayoutReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    market, truth = poisoned
    chain, store, task_id = market.chain, market.store, market.task_id
    honest_cid = chain.events(PayoutRootPosted, task_id=task_id)[1].report_cid
    real_get = store.get

    def unpinned(cid: str, max_size: int) -> bytes:
        if cid == honest_cid:
            raise BlobNotFound(cid)
        return real_get(cid, max_size)

    monkeypatch.setattr(store, "get", unpinned)
    miner = market.miners[0]
    (line,) = miner.collect(task_id)
    assert line == (
        f"no report of task {task_id} matches its agreed root ("
        f"{market.keys[7].address[:10]}...'s: leaf at position 0 has index "
        f"{len(truth.payouts) - 1}; {market.evaluator_account.address[:10]}...'s: cannot fetch "
        f"{honest_cid}: {honest_cid})"
    )
    assert "claimed" not in miner.state.section("tasks", task_id)
    with pytest.raises(NoMatchingReport):
        claim_payout(chain, store, miner.address, task_id)

    monkeypatch.setattr(store, "get", real_get)
    (owed,) = [e for e in truth.payouts if e.account == miner.address]
    assert miner.collect(task_id) == [
        f"claimed {owed.amount / 10**18:.6f} (leaf {owed.index}, {owed.points} points)"
    ]


def test_the_index_and_the_api_skip_poisoned_reports_even_after_a_restart(
    poisoned: tuple[Market, PayoutReport], tmp_path: Path
) -> None:
    market, truth = poisoned
    chain, task_id = market.chain, market.task_id
    path = tmp_path / "index.sqlite"
    first = Indexer(chain, path, confirmations=0)  # no store: the roots, their reports pending
    first.sync()
    first.close()

    restarted = Indexer(chain, path, confirmations=0, store=market.store)
    restarted.sync()
    again = Indexer(chain, path, confirmations=0, store=market.store)
    again.sync()  # and once more: nothing left pending, nothing raised

    rows = again.db.execute(
        "SELECT evaluator, matches FROM reports WHERE task_id = ? ORDER BY block_number", (task_id,)
    ).fetchall()
    assert rows == [
        (market.keys[7].address, 0),
        (market.evaluator_account.address, 1),
        (market.keys[3].address, 0),
    ]
    again.close()

    w3 = market.w3
    app = create_app(path, lambda: (int(w3.eth.block_number), now(w3)))
    with TestClient(app) as client:
        reply = client.get(f"/api/v1/tasks/{task_id}/payouts")
        task = client.get(f"/api/v1/tasks/{task_id}")
    assert reply.status_code == 200, reply.text
    table = reply.json()
    assert (table["evaluator"], table["agreed"], table["root"]) == (
        market.evaluator_account.address,
        True,
        truth.root,
    )
    assert [(row["leaf"], row["account"], int(row["amount"])) for row in table["payouts"]] == [
        (p.index, p.account, p.amount) for p in truth.payouts
    ]
    assert task.status_code == 200, task.text


def test_verify_flags_each_poisoned_report_and_passes_the_honest_one(
    poisoned: tuple[Market, PayoutReport],
) -> None:
    market, truth = poisoned
    verification = verify_task(market.chain, market.store, market.task_id, market.chain_id)

    assert not verification.ok
    failed = {check.name: check.detail for check in verification.checks if not check.ok}
    rogue, liar = (f"{k.address[:10]}..." for k in (market.keys[7], market.keys[3]))
    assert failed == {
        f"{rogue} report": f"leaf at position 0 has index {len(truth.payouts) - 1}",
        f"{liar} report": (
            f"the leaves add up to {truth.total + 1}, not the posted total {truth.total}"
        ),
        f"{liar} root": failed[f"{liar} root"],  # its root is not the reward rule's either
        # a copy of the rogue's report: it hands on the rogue's delivery, not one of its own
        f"{liar} delivery": (
            f"the delivery is signed by {market.keys[7].address}, not the report's evaluator"
        ),
    }
    honest = f"{market.evaluator_account.address[:10]}..."
    assert [c.name for c in verification.checks if c.name.startswith(honest) and c.ok] == [
        f"{honest} report",
        f"{honest} tree",
        f"{honest} unconfirmed merges",
        f"{honest} delivery",
        f"{honest} root",
        f"{honest} validation file",
        f"{honest} coalitions",  # none readable without an evaluator's key: nothing to refute
    ]


def test_verify_counts_each_node_once_however_many_reports_it_rescores(
    poisoned: tuple[Market, PayoutReport],
) -> None:
    market, truth = poisoned
    account = market.evaluator_account
    verification = verify_task(
        market.chain,
        market.store,
        market.task_id,
        market.chain_id,
        account,
        account_key(account),
    )

    nodes = sorted(n.node_id for n in truth.nodes)
    assert (verification.rescored, verification.unreadable) == (nodes, [])
    scores = [c.detail for c in verification.checks if c.name == "scores"]
    assert scores == [f"{len(nodes)} nodes re-scored, 0 sealed from this key"] * 3


def test_verify_rescores_coalitions_and_catches_a_report_that_inflates_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 15: the Shapley values are replayed from the report's coalition scores, so a liar
    # who inflates one update's coalitions and posts the root they imply passes the root
    # check; the verifier who can read the updates scores every coalition again.
    market = new_market(tmp_path)
    honest_account, liar, third = market.evaluator_account, market.keys[3], market.keys[7]
    market.create(rounds=1, evaluators=[honest_account, liar, third], quorum=2)
    market.propose()
    honest, lying = market.make_evaluator(honest_account), market.make_evaluator(liar)
    market.add_miners(3, epochs=3)
    for miner in market.miners:
        miner.submit_round(market.task_id)
    advance_to(market.w3, market.chain.task(market.task_id).round_end(0))
    for evaluator in (honest, lying):
        evaluator.step(market.task_id)  # posts the merge, confirms it
    market.reveal()
    truth = honest.evaluate(market.task_id)
    (merge_id,) = truth.coalitions
    favoured = min(int(key) for key in truth.coalitions[merge_id] if "," not in key)
    real = coalitions_module.averager

    def inflated(scorer: Any, view: Any, frontier: Any, node_id: int, dataset: Any) -> Any:
        score = real(scorer, view, frontier, node_id, dataset)
        return lambda coalition: score(coalition) + (9 if favoured in coalition else 0)

    with monkeypatch.context() as lying_only:  # the honest evaluator and verify score truly
        lying_only.setattr(coalitions_module, "averager", inflated)
        lie, _ = lying.settle(market.task_id)
    honest.step(market.task_id)

    assert lie.coalitions != truth.coalitions  # with several kept updates, so would the root
    verification = verify_task(
        market.chain,
        market.store,
        market.task_id,
        market.chain_id,
        honest_account,
        account_key(honest_account),
    )
    failed = {check.name: check.detail for check in verification.checks if not check.ok}
    name = f"{liar.address[:10]}... coalitions"
    assert list(failed) == [name]
    assert f"merge {merge_id} [{favoured}]: " in failed[name]
    assert f"{honest_account.address[:10]}... coalitions" in {
        check.name for check in verification.checks if check.ok
    }
