"""A task paid in an ERC-20 (the DevToken): the full lifecycle with exact token balances of every
party at every step and no ETH moving to or from the market, then the ways a token task refuses
ETH or a transfer the token itself refuses."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from eth_abi import decode
from web3 import Web3
from web3.contract import Contract

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.client import ChainClient
from marketplace.chain.events import (
    ArchitectureProposed,
    Claimed,
    MergePosted,
    PayoutRootAgreed,
    Reclaimed,
    Refunded,
    TaskCancelled,
    TaskCreated,
    TaskFinalized,
    UpdateSubmitted,
)
from marketplace.rules.messages import NodeKind, Phase, TaskParams
from marketplace.wire.crypto import PayoutLeaf, payout_tree
from tests.helpers import (
    create_task,
    digest,
    fund,
    funded_task,
    mint,
    selector,
    send_reveal,
    spent,
)

UNIT = 10**18  # the DevToken has 18 decimals
BOUNTY = 10 * UNIT
DEPOSIT = UNIT // 100


@pytest.fixture
def token(deploy: Callable[..., Contract]) -> Contract:
    return deploy("DevToken")


def allowance(token: Contract, owner: str, spender: str) -> int:
    return int(token.functions.allowance(owner, spender).call())


def token_revert(exc: errors.ContractRevert) -> tuple[bytes, bytes]:
    """The 4-byte selector and the encoded arguments of an undecoded revert."""
    raw = bytes.fromhex(exc.values["data"][2:])
    return raw[:4], raw[4:]


class Books:
    """The token and ETH balances every party should hold, checked against the chain at once.

    Every transaction a party sends costs it exactly its gas and carries no ETH value; tokens
    move only as `move` says. The market is one of the parties: its ETH balance must stay 0.
    """

    def __init__(
        self, w3: Web3, market: ChainClient, token: Contract, parties: Iterable[str]
    ) -> None:
        self.w3, self.market, self.token = w3, market, token
        self.tokens = {party: self.token_balance(party) for party in parties}
        self.eth = {party: market.balance(party) for party in self.tokens}

    def token_balance(self, account: str) -> int:
        return int(self.token.functions.balanceOf(account).call())

    def sent(self, sender: str, tx_hash: str) -> None:
        assert self.w3.eth.get_transaction(tx_hash)["value"] == 0  # type: ignore[arg-type]
        self.eth[sender] -= spent(self.w3, tx_hash)

    def move(self, source: str, destination: str, amount: int) -> None:
        self.tokens[source] -= amount
        self.tokens[destination] += amount

    def check(self) -> None:
        assert {p: self.token_balance(p) for p in self.tokens} == self.tokens
        assert {p: self.market.balance(p) for p in self.eth} == self.eth
        assert self.eth[self.market.address] == 0


def test_token_task_two_rounds_merge_reveal_settle_claim_reclaim(
    w3: Web3,
    market: ChainClient,
    token: Contract,
    accounts: list[str],
    sponsor: str,
    evaluator: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    scientist, miner_a, miner_b, outsider = accounts[2], accounts[3], accounts[4], accounts[8]
    mkt = market.address
    mint(w3, token, sponsor, BOUNTY + 2 * UNIT)
    for miner in (scientist, miner_a, miner_b):
        mint(w3, token, miner, UNIT)
    books = Books(
        w3, market, token, [mkt, sponsor, evaluator, scientist, miner_a, miner_b, outsider]
    )
    assert books.tokens == {
        mkt: 0,
        sponsor: 12 * UNIT,
        evaluator: 0,
        scientist: UNIT,
        miner_a: UNIT,
        miner_b: UNIT,
        outsider: 0,
    }
    assert books.eth[mkt] == 0

    # createTask: the sponsor approves the bounty, the market pulls exactly it; no ETH is sent.
    approved = market.approve_token(sponsor, token.address, BOUNTY)
    books.sent(sponsor, approved.tx_hash)
    assert allowance(token, sponsor, mkt) == BOUNTY
    created = market.create_task(sponsor, task_params(token=token.address))
    task_id = created.value
    assert task_id == 1 and market.task_count() == 1
    books.sent(sponsor, created.tx_hash)
    books.move(sponsor, mkt, BOUNTY)
    books.check()
    assert allowance(token, sponsor, mkt) == 0
    event = created.event(TaskCreated)
    assert (event.task_id, event.sponsor, event.token) == (1, sponsor, token.address)
    assert (event.bounty, event.deposit, event.quorum) == (BOUNTY, DEPOSIT, 1)
    assert event.evaluators == (evaluator,)
    task = market.task(task_id)
    assert task.token == token.address and not task.is_eth
    assert (task.bounty, task.deposit, task.escrow) == (BOUNTY, DEPOSIT, BOUNTY)
    assert market.phase(task_id) == Phase.ROUNDS

    # Round 0: every submitter approves its deposits; each submission pulls one deposit.
    for miner, deposits in ((scientist, 1), (miner_a, 2), (miner_b, 2)):
        books.sent(miner, market.approve_token(miner, token.address, deposits * DEPOSIT).tx_hash)
    arch = market.propose_architecture(scientist, task_id, digest("arch"), "bafkreiarch")
    assert arch.value == 1
    assert arch.event(ArchitectureProposed).arguments() == {
        "task_id": 1,
        "node_id": 1,
        "author": scientist,
        "round": 0,
        "digest": digest("arch"),
        "cid": "bafkreiarch",
    }
    books.sent(scientist, arch.tx_hash)
    books.move(scientist, mkt, DEPOSIT)
    books.check()
    upd_a = market.submit_update(miner_a, task_id, 1, 600, digest("a0"), "bafkreia0")
    books.sent(miner_a, upd_a.tx_hash)
    books.move(miner_a, mkt, DEPOSIT)
    books.check()
    upd_b = market.submit_update(
        miner_b, task_id, 1, 400, digest("b0"), "bafkreib0", epsilon_millis=1500
    )
    books.sent(miner_b, upd_b.tx_hash)
    books.move(miner_b, mkt, DEPOSIT)
    books.check()
    assert (upd_a.value, upd_b.value) == (2, 3)
    assert upd_b.event(UpdateSubmitted).arguments() == {
        "task_id": 1,
        "node_id": 3,
        "author": miner_b,
        "parent": 1,
        "round": 0,
        "samples": 400,
        "epsilon": 1500,  # declared, in thousandths: DP epsilon 1.5
        "digest": digest("b0"),
        "cid": "bafkreib0",
    }
    assert books.tokens[mkt] == BOUNTY + 3 * DEPOSIT == market.task(task_id).escrow

    # The evaluator merges round 0 once it closed; a merge moves no money.
    task = market.task(task_id)
    advance_to(task.round_end(0))
    merge = market.post_merge(
        evaluator, task_id, 0, [2, 3], 1000, digest("m0"), digest("p0"), "bafkreim0"
    )
    assert merge.value == 4 and merge.event(MergePosted).parents == (2, 3)
    books.sent(evaluator, merge.tx_hash)
    books.check()

    # Round 1: both miners build on the merge with their second approved deposit.
    for miner, samples, label in ((miner_a, 600, "a1"), (miner_b, 400, "b1")):
        result = market.submit_update(miner, task_id, 4, samples, digest(label), f"bafkrei{label}")
        assert market.node(task_id, result.value).parent == 4
        books.sent(miner, result.tx_hash)
        books.move(miner, mkt, DEPOSIT)
        books.check()
    for miner in (scientist, miner_a, miner_b):
        assert allowance(token, miner, mkt) == 0
    advance_to(task.rounds_end)
    assert market.phase(task_id) == Phase.REVEAL
    merge = market.post_merge(
        evaluator, task_id, 1, [5, 6], 1000, digest("m1"), digest("p1"), "bafkreim1"
    )
    books.sent(evaluator, merge.tx_hash)
    books.check()
    assert [(r.node_id, r.kind) for r in market.nodes(task_id)] == [
        (1, NodeKind.ARCHITECTURE),
        (2, NodeKind.UPDATE),
        (3, NodeKind.UPDATE),
        (4, NodeKind.MERGE),
        (5, NodeKind.UPDATE),
        (6, NodeKind.UPDATE),
        (7, NodeKind.MERGE),
    ]
    task = market.task(task_id)
    assert (task.node_count, task.submission_count) == (7, 5)
    assert task.escrow == BOUNTY + 5 * DEPOSIT == books.tokens[mkt]

    # Reveal, then the payout root: 2 tokens expertise, 5 tokens data, deposits refunded.
    revealed = send_reveal(market, task_id, sponsor)
    books.sent(sponsor, revealed.tx_hash)
    books.check()
    assert market.phase(task_id) == Phase.EVALUATION
    leaves = [
        PayoutLeaf(0, scientist, 2 * UNIT + DEPOSIT, 0),
        PayoutLeaf(1, miner_a, 3 * UNIT + 2 * DEPOSIT, 30),
        PayoutLeaf(2, miner_b, 2 * UNIT + 2 * DEPOSIT, 20),
    ]
    tree = payout_tree(leaves)
    total = sum(leaf.amount for leaf in leaves)
    posted = market.post_payout_root(evaluator, task_id, tree.root, total)
    assert posted.event(PayoutRootAgreed).arguments() == {
        "task_id": 1,
        "root": tree.root,
        "total": total,
    }
    books.sent(evaluator, posted.tx_hash)
    books.check()
    advance_to(market.task(task_id).challenge_end)
    finalized = market.finalize(outsider, task_id)
    assert finalized.event(TaskFinalized).arguments() == {
        "task_id": 1,
        "root": tree.root,
        "total": total,
    }
    books.sent(outsider, finalized.tx_hash)
    books.check()
    assert market.phase(task_id) == Phase.CLAIMS

    # Claims pay tokens to the leaf's account, whoever sends them.
    claim_s = market.claim(outsider, task_id, leaves[0], tree.proof(0))
    books.sent(outsider, claim_s.tx_hash)
    books.move(mkt, scientist, 2 * UNIT + DEPOSIT)
    books.check()
    claim_a = market.claim(miner_a, task_id, leaves[1], tree.proof(1))
    assert claim_a.event(Claimed).arguments() == {
        "task_id": 1,
        "index": 1,
        "account": miner_a,
        "amount": 3 * UNIT + 2 * DEPOSIT,
        "points": 30,
    }
    books.sent(miner_a, claim_a.tx_hash)
    books.move(mkt, miner_a, 3 * UNIT + 2 * DEPOSIT)
    books.check()
    assert market.reputation(miner_a) == 30 and market.reputation(scientist) == 0
    with pytest.raises(reverts.AlreadyClaimed):
        market.claim(miner_a, task_id, leaves[1], tree.proof(1))

    # The sponsor reclaims the unallocated 3 tokens now, the unclaimed share after the deadline.
    reclaimed = market.reclaim(sponsor, task_id)
    assert reclaimed.event(Reclaimed).arguments() == {
        "task_id": 1,
        "sponsor": sponsor,
        "amount": 3 * UNIT,
    }
    books.sent(sponsor, reclaimed.tx_hash)
    books.move(mkt, sponsor, 3 * UNIT)
    books.check()
    with pytest.raises(reverts.NothingToReclaim):
        market.reclaim(sponsor, task_id)
    advance_to(market.task(task_id).claim_deadline)
    assert market.phase(task_id) == Phase.CLOSED
    with pytest.raises(reverts.WrongPhase):
        market.claim(miner_b, task_id, leaves[2], tree.proof(2))
    reclaimed = market.reclaim(sponsor, task_id)
    assert reclaimed.event(Reclaimed).amount == 2 * UNIT + 2 * DEPOSIT
    books.sent(sponsor, reclaimed.tx_hash)
    books.move(mkt, sponsor, 2 * UNIT + 2 * DEPOSIT)
    books.check()
    assert books.tokens == {
        mkt: 0,
        sponsor: 2 * UNIT + 3 * UNIT + 2 * UNIT + 2 * DEPOSIT,
        evaluator: 0,
        scientist: UNIT - DEPOSIT + 2 * UNIT + DEPOSIT,
        miner_a: UNIT - 2 * DEPOSIT + 3 * UNIT + 2 * DEPOSIT,
        miner_b: UNIT - 2 * DEPOSIT,
        outsider: 0,
    }
    final = market.task(task_id)
    assert (final.claimed, final.reclaimed) == (5 * UNIT + 3 * DEPOSIT, 5 * UNIT + 2 * DEPOSIT)


def test_eth_sent_with_a_token_task_is_refused(
    w3: Web3,
    market: ChainClient,
    token: Contract,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
) -> None:
    scientist, miner = accounts[2], accounts[3]
    params = task_params(token=token.address)
    fund(w3, market, token, sponsor, BOUNTY)
    for value in (1, BOUNTY):
        with pytest.raises(reverts.WrongValue) as refused:
            market.tx.transact(sponsor, "createTask", [params.as_abi()], value=value)
        assert refused.value.values == {"sent": value, "required": 0}
    assert market.task_count() == 0 and market.balance(market.address, token.address) == 0

    task_id = create_task(market, sponsor, params)
    for account in (scientist, miner):
        fund(w3, market, token, account, UNIT)
    # A deposit in ETH (what an ETH task would take) is refused as any other value.
    for value in (1, DEPOSIT):
        with pytest.raises(reverts.WrongValue) as refused:
            market.tx.transact(
                scientist, "proposeArchitecture", [task_id, digest("arch"), "cid"], value=value
            )
        assert refused.value.values == {"sent": value, "required": 0}
    market.propose_architecture(scientist, task_id, digest("arch"), "cid")
    args = [task_id, 1, 100, 0, digest("u"), bytes(32), "cid"]
    for value in (1, DEPOSIT):
        with pytest.raises(reverts.WrongValue) as refused:
            market.tx.transact(miner, "submitUpdate", args, value=value)
        assert refused.value.values == {"sent": value, "required": 0}

    assert market.task(task_id).node_count == 1
    assert market.balance(market.address, token.address) == BOUNTY + DEPOSIT
    assert market.balance(market.address) == 0
    assert (market.balance(scientist, token.address), market.balance(miner, token.address)) == (
        UNIT - DEPOSIT,
        UNIT,
    )


def test_transfers_the_token_refuses_arrive_as_its_own_revert(
    w3: Web3,
    market: ChainClient,
    token: Contract,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
) -> None:
    scientist, miner, broke = accounts[2], accounts[3], accounts[4]
    mkt = market.address
    insufficient_allowance = selector("ERC20InsufficientAllowance(address,uint256,uint256)")
    insufficient_balance = selector("ERC20InsufficientBalance(address,uint256,uint256)")

    # The sponsor holds the bounty but did not approve it: no task.
    mint(w3, token, sponsor, BOUNTY)
    with pytest.raises(errors.UnknownRevert) as refused:
        market.create_task(sponsor, task_params(token=token.address))
    assert type(refused.value) is errors.UnknownRevert
    data = token_revert(refused.value)
    assert data[0] == insufficient_allowance
    assert decode(["address", "uint256", "uint256"], data[1]) == (mkt.lower(), 0, BOUNTY)
    assert market.task_count() == 0 and market.balance(sponsor, token.address) == BOUNTY

    market.approve_token(sponsor, token.address, BOUNTY)
    task_id = create_task(market, sponsor, task_params(token=token.address))
    for account in (scientist, miner):
        mint(w3, token, account, UNIT)

    # Submissions without approval: the token's ERC20InsufficientAllowance, no node added.
    with pytest.raises(errors.UnknownRevert) as refused:
        market.propose_architecture(scientist, task_id, digest("arch"), "cid")
    assert type(refused.value) is errors.UnknownRevert
    data = token_revert(refused.value)
    assert data[0] == insufficient_allowance
    assert decode(["address", "uint256", "uint256"], data[1]) == (mkt.lower(), 0, DEPOSIT)
    assert market.task(task_id).node_count == 0

    market.approve_token(scientist, token.address, DEPOSIT)
    market.propose_architecture(scientist, task_id, digest("arch"), "cid")
    with pytest.raises(errors.UnknownRevert) as refused:
        market.submit_update(miner, task_id, 1, 100, digest("u"), "cid")
    assert type(refused.value) is errors.UnknownRevert
    assert token_revert(refused.value)[0] == insufficient_allowance
    assert market.task(task_id).node_count == 1

    # Approved but without tokens: the token's ERC20InsufficientBalance.
    market.approve_token(broke, token.address, DEPOSIT)
    with pytest.raises(errors.UnknownRevert) as refused:
        market.submit_update(broke, task_id, 1, 100, digest("u"), "cid")
    data = token_revert(refused.value)
    assert data[0] == insufficient_balance
    assert decode(["address", "uint256", "uint256"], data[1]) == (broke.lower(), 0, DEPOSIT)

    task = market.task(task_id)
    assert (task.node_count, task.escrow) == (1, BOUNTY + DEPOSIT)
    assert market.balance(mkt, token.address) == BOUNTY + DEPOSIT
    assert market.balance(miner, token.address) == UNIT
    assert market.balance(mkt) == 0


def test_a_token_without_code_is_refused(
    market: ChainClient, accounts: list[str], sponsor: str, task_params: Callable[..., TaskParams]
) -> None:
    with pytest.raises(reverts.TokenNotAContract) as refused:
        market.create_task(sponsor, task_params(token=accounts[7]))
    assert refused.value.values == {"token": accounts[7]}
    assert market.task_count() == 0


def test_token_refunds_and_cancellation_pay_in_the_token(
    w3: Web3,
    market: ChainClient,
    token: Contract,
    accounts: list[str],
    sponsor: str,
    task_params: Callable[..., TaskParams],
    advance_to: Callable[[int], int],
) -> None:
    """The refund and cancel paths send tokens too (the lifecycle covered claim and reclaim)."""
    scientist, miner, outsider = accounts[2], accounts[3], accounts[8]
    mkt = market.address
    bounty = BOUNTY + 1  # over 2 submissions (no merge kept any): the odd unit goes to the last
    task_id = funded_task(
        w3, market, token, sponsor, task_params(token=token.address, bounty=bounty)
    )
    cancelled_id = funded_task(
        w3, market, token, sponsor, task_params(token=token.address, bounty=3 * UNIT)
    )
    assert market.balance(mkt, token.address) == bounty + 3 * UNIT

    for account in (scientist, miner):
        fund(w3, market, token, account, DEPOSIT)
    market.propose_architecture(scientist, task_id, digest("arch"), "cid")
    market.submit_update(miner, task_id, 1, 100, digest("u"), "cid")
    assert market.balance(mkt, token.address) == bounty + 3 * UNIT + 2 * DEPOSIT

    cancelled = market.cancel_task(sponsor, cancelled_id)
    assert cancelled.event(TaskCancelled).arguments() == {
        "task_id": cancelled_id,
        "refunded": 3 * UNIT,
    }
    assert market.balance(sponsor, token.address) == 3 * UNIT
    assert market.balance(mkt, token.address) == bounty + 2 * DEPOSIT

    advance_to(market.task(task_id).reveal_deadline)
    assert market.phase(task_id) == Phase.UNREVEALED
    shares = {1: bounty // 2, 2: bounty - bounty // 2}
    for node_id, author in ((1, scientist), (2, miner)):
        share = shares[node_id]
        refunded = market.refund(outsider, task_id, node_id)
        assert refunded.event(Refunded).arguments() == {
            "task_id": task_id,
            "node_id": node_id,
            "author": author,
            "amount": DEPOSIT + share,
        }
        assert market.balance(author, token.address) == DEPOSIT + share
    assert market.balance(mkt, token.address) == 0
    assert market.balance(mkt) == 0 and market.balance(outsider, token.address) == 0
