"""Issue 14, attacks 1 and 2(a), run through the market's own roles on eth-tester: what another
party submits that cannot be read, fitted or scored costs that party, never the settlement.

1. A misfit architecture (a valid `ModelSpec` whose output does not fit the task), or junk bytes
   with an update on them, proposed first: miners skip it, the evaluator merges the honest
   architecture every round, refuses the junk with a reason, settles, and pays the honest
   what the rule owes them (`tests/rule.py`: the data cap, the harm clause).
2(a). The sponsor reveals a CID nobody stored: the evaluator scores its sealed copy (same
   digest) and settles; with no readable copy at all it waits, and never posts from wrong data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.chain.events import Claimed, PayoutRootPosted, Reclaimed
from marketplace.dev.devchain import advance_to
from marketplace.errors import EnvelopeError, SpecError, StoreUnavailable
from marketplace.protocol.reports import agreed_report
from marketplace.protocol.tasks import (
    account_key,
    evaluator_keys,
    nodes_by_id,
    open_validation,
    read_spec,
)
from marketplace.protocol.verdicts import Verdict
from marketplace.roles import scorer as scorer_module
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import propose_architecture
from marketplace.roles.verify import verify_task
from marketplace.rules.messages import NodeKind, Phase, Score
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.runtime.state import StateFile
from marketplace.wire.cid import cid_of
from marketplace.wire.codec import encode_weights
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import seal
from marketplace.wire.report import PayoutReport
from tests.helpers import spent
from tests.market import BOUNTY, DEPOSIT, SPLIT, TINY, Market, new_market
from tests.rule import capped_data, forfeited, refunded_deposits

BPS = 10_000
MISFIT = ModelSpec(
    input_shape=[64], layers=[{"type": "linear", "in_features": 64, "out_features": 5}]
)
JUNK = bytes(100)


@pytest.fixture
def market(tmp_path: Path) -> Market:
    m = new_market(tmp_path)
    m.create(rounds=2)
    return m


def _propose_honest(market: Market) -> int:
    """The honest architecture (TINY), by account 3."""
    result = propose_architecture(
        market.connection(market.keys[3]), market.task_id, TINY, init_weights(TINY, 1)
    )
    assert result.value is not None
    return result.value


def _rounds(market: Market, rounds: int = 2) -> list[list[str]]:
    """Every miner submits, then the round closes and the evaluator merges; its lines per round."""
    lines = []
    for round_index in range(rounds):
        for miner in market.miners:
            submission = market.submit(miner)  # past a merge window without a merge
            assert submission is not None
        lines.append(market.end_round(round_index))
    return lines


def _posted_a_merge_each_round(lines: list[list[str]]) -> bool:
    return all(
        any(line.startswith(f"round {r}: posted merge") for line in done)
        for r, done in enumerate(lines)
    )


def _settle(market: Market) -> PayoutReport:
    assert market.evaluator is not None
    lines = market.evaluator.step(market.task_id)
    assert len(lines) == 1 and lines[0].startswith("posted the payout root"), lines
    market.finalize()
    return agreed_report(market.chain, market.store, market.task_id)


def _claim_all(market: Market, report: PayoutReport) -> None:
    """Account 9 relays every leaf: each account gains exactly its amount, in wei."""
    for entry in report.payouts:
        before = market.chain.balance(entry.account)
        market.chain.claim(
            market.keys[9].address, market.task_id, entry.leaf(), entry.proof_bytes()
        )
        assert market.chain.balance(entry.account) == before + entry.amount


def _reclaim(market: Market) -> int:
    sponsor = market.sponsor.address
    advance_to(market.w3, market.chain.task(market.task_id).claim_deadline)
    before = market.chain.balance(sponsor)
    reclaimed = market.chain.reclaim(sponsor, market.task_id)
    amount = int(reclaimed.event(Reclaimed).amount)
    assert market.chain.balance(sponsor) == before + amount - spent(market.w3, reclaimed.tx_hash)
    return amount


def _pools(report: PayoutReport) -> tuple[int, int, int]:
    return (
        sum(p.expertise for p in report.payouts),
        sum(p.data for p in report.payouts),
        sum(p.compute for p in report.payouts),
    )


# ---------------------------------------------------------------- attack 1: misfit / junk


def test_a_misfit_architecture_first_is_refused_and_the_honest_parties_are_paid(
    market: Market,
) -> None:
    misfit = propose_architecture(
        market.connection(market.scientist),
        market.task_id,
        MISFIT,
        init_weights(MISFIT, 1),
    ).value
    honest = _propose_honest(market)
    assert (misfit, honest) == (1, 2)
    market.make_evaluator()
    market.add_miners(3, epochs=1)

    lines = _rounds(market)

    records = nodes_by_id(market.chain, market.task_id)
    updates = [r for r in records.values() if r.kind is NodeKind.UPDATE]
    merges = [r for r in records.values() if r.kind is NodeKind.MERGE]
    assert [(u.round, u.parents) for u in updates if u.round == 0] == [(0, (honest,))] * 3
    assert [m.round for m in merges] == [0, 1]
    assert all(
        any(line.startswith(f"round {r}: posted merge") for line in lines[r]) for r in (0, 1)
    )
    market.reveal()
    report = _settle(market)

    verdicts = {n.node_id: n for n in report.nodes}
    assert not verdicts[misfit].valid
    assert verdicts[misfit].reason == "spec: the spec outputs shape (5,), the task needs (10,)"
    assert all(n.valid for n in report.nodes if n.node_id != misfit)
    assert report.winner in {m.node_id for m in merges}  # an update never wins
    paid = {p.account: p for p in report.payouts}
    assert market.scientist.address not in paid  # no expertise, and its deposit is forfeited
    expertise = BOUNTY * SPLIT.expertise_bps // BPS
    assert paid[market.keys[3].address].expertise == expertise
    assert paid[market.keys[3].address].deposits == DEPOSIT
    # The data pool by points, each account capped at half of it; deposits back unless the
    # harm clause takes them (one epoch on a skewed shard can score under the frontier).
    data = capped_data(report, BOUNTY * SPLIT.data_bps // BPS)
    refunds = refunded_deposits(report, records, DEPOSIT)
    lost = forfeited(report, records)
    miners = [m.address for m in market.miners]
    assert data and set(data) <= set(miners)
    for account in miners:
        entry = paid.get(account)
        assert (entry.data if entry else 0) == data.get(account, 0)
        assert (entry.deposits if entry else 0) == refunds.get(account, 0)
    owed = {a for a in miners if data.get(a) or refunds.get(a)}
    assert set(paid) == {market.keys[3].address, *owed}
    _claim_all(market, report)
    # The sponsor gets back what no pool gave out (dust and the capped excess included) and
    # the forfeited deposits: the misfit's and the harmful updates'.
    allocated = sum(_pools(report))
    assert _reclaim(market) == BOUNTY - allocated + DEPOSIT * (1 + len(lost))
    assert market.chain.balance(market.chain.address) == 0
    assert verify_task(market.chain, market.store, market.task_id, market.chain_id).ok


def test_junk_bytes_first_with_an_update_on_them_are_skipped_and_settlement_completes(
    market: Market,
) -> None:
    attacker = market.scientist.address
    junk = market.chain.propose_architecture(
        attacker, market.task_id, sha256(JUNK), market.store.put(JUNK)
    )
    # An update on it, sealed to the evaluator like an honest one (weights of another spec).
    spec = read_spec(market.chain, market.store, market.task_id)
    sealed = seal(
        encode_weights(init_weights(TINY, 7)),
        evaluator_keys(spec),
        market.scientist,
        task_id=market.task_id,
        parent=1,
        kind="update",
        chain_id=market.chain_id,
    )
    on_junk = market.chain.submit_update(
        attacker, market.task_id, 1, 1000, sha256(sealed), market.store.put(sealed)
    )
    assert (junk.value, on_junk.value) == (1, 2)
    honest = _propose_honest(market)
    evaluator = market.make_evaluator()
    market.add_miners(3, epochs=1)

    lines = _rounds(market)

    records = nodes_by_id(market.chain, market.task_id)
    round_zero = [r for r in records.values() if r.kind is NodeKind.UPDATE and r.round == 0]
    assert [u.parents for u in round_zero if u.author != attacker] == [(honest,)] * 3
    assert [m.round for m in records.values() if m.kind is NodeKind.MERGE] == [0, 1]
    assert all(
        any(line.startswith(f"round {r}: posted merge") for line in lines[r]) for r in (0, 1)
    )
    market.reveal()
    report = _settle(market)

    verdicts = {n.node_id: n for n in report.nodes}
    assert not verdicts[1].valid and verdicts[1].reason.startswith("weights: not safetensors")
    assert (verdicts[2].valid, verdicts[2].reason) == (False, "spec: architecture 1 is invalid")
    assert attacker not in {p.account for p in report.payouts}
    assert evaluator.finished(market.task_id)
    data = capped_data(report, BOUNTY * SPLIT.data_bps // BPS)
    assert {p.account: p.data for p in report.payouts if p.data} == data
    _claim_all(market, report)
    # Back to the sponsor: what no pool gave out (the capped excess too) and the deposits of
    # the junk, the update on it and any honest update the harm clause takes.
    lost = forfeited(report, records)
    assert _reclaim(market) == BOUNTY - sum(_pools(report)) + DEPOSIT * (2 + len(lost))
    assert verify_task(market.chain, market.store, market.task_id, market.chain_id).ok
    key = account_key(market.evaluator_account)
    full = verify_task(
        market.chain,
        market.store,
        market.task_id,
        market.chain_id,
        market.evaluator_account,
        key,
    )
    assert full.ok and full.rescored == sorted(records)


# ---------------------------------------------------------------- attack 2(a): a bogus CID


def _bogus_reveal(market: Market, stored: bool = False) -> bytes:
    """The sponsor reveals the right digest and salt under a CID nobody stored: that of other
    bytes, or (`stored` False but the real CID) the file's own, never uploaded. The file."""
    spec = read_spec(market.chain, market.store, market.task_id)
    file, salt = open_validation(
        market.chain,
        market.store,
        spec,
        market.task_id,
        account_key(market.sponsor),
        market.chain_id,
    )
    cid = cid_of(file) if stored else cid_of(b"a validation file nobody stored")
    assert not market.store.has(cid)
    market.chain.reveal_validation(market.sponsor.address, market.task_id, sha256(file), salt, cid)
    return file


def test_a_revealed_cid_nobody_stored_is_settled_from_the_sealed_copy(market: Market) -> None:
    market.propose()
    market.make_evaluator()
    market.add_miners(3, epochs=1)
    _rounds(market)
    file = _bogus_reveal(market)

    report = _settle(market)

    assert report.validation_digest == sha256(file).hex()
    assert market.chain.phase(market.task_id) is Phase.CLAIMS
    contract = market.chain.address
    records = nodes_by_id(market.chain, market.task_id)
    data = capped_data(report, BOUNTY * SPLIT.data_bps // BPS)
    refunds = refunded_deposits(report, records, DEPOSIT)
    assert data
    for miner in market.miners:
        entry = report.entry_for(miner.address)
        before, escrow = market.chain.balance(miner.address), market.chain.balance(contract)
        miner.collect(market.task_id)
        claimed = market.chain.events(Claimed, task_id=market.task_id, account=miner.address)
        if entry is None:  # no credit, and the harm clause took every deposit it made
            assert (data.get(miner.address), refunds.get(miner.address)) == (None, None)
            assert claimed == [] and market.chain.balance(miner.address) == before
            continue
        assert (entry.data, entry.deposits) == (
            data.get(miner.address, 0),
            refunds.get(miner.address, 0),
        )
        assert entry.amount > 0 and [e.amount for e in claimed] == [entry.amount]
        gas = spent(market.w3, claimed[0].tx_hash)
        assert market.chain.balance(miner.address) == before + entry.amount - gas
        assert market.chain.balance(contract) == escrow - entry.amount
    public = verify_task(market.chain, market.store, market.task_id, market.chain_id)
    assert not public.ok
    assert public.checks[0].name == "validation" and not public.checks[0].ok
    assert "cannot be read" in public.checks[0].detail
    sponsor = verify_task(  # the sponsor holds a sealed copy too: it recomputes the root
        market.chain,
        market.store,
        market.task_id,
        market.chain_id,
        market.sponsor,
        account_key(market.sponsor),
    )
    assert sponsor.ok and [c.name for c in sponsor.checks][0] == "validation"
    merges = [r.node_id for r in market.chain.nodes(market.task_id) if r.kind is NodeKind.MERGE]
    assert merges and set(merges) <= set(sponsor.unreadable)  # the sponsor gets the winner only


def test_no_readable_validation_copy_means_no_root_until_the_file_is_published(
    market: Market,
) -> None:
    market.propose()
    market.make_evaluator()
    market.add_miners(3, epochs=1)
    _rounds(market)
    file = _bogus_reveal(market, stored=True)
    spec = read_spec(market.chain, market.store, market.task_id)
    sealed = market.store.root / spec.validation_cid[-3:-1] / spec.validation_cid
    sealed.write_bytes(b"corrupted" + sealed.read_bytes()[9:])  # the evaluator's copy is gone
    restarted = Evaluator(
        market.connection(market.evaluator_account),
        StateFile(market.folder / "state" / "evaluator-restarted.json"),
    )

    lines = restarted.step(market.task_id)

    assert len(lines) == 1 and lines[0].startswith("cannot settle yet: "), lines
    assert market.chain.events(PayoutRootPosted, task_id=market.task_id) == []
    assert restarted.step(market.task_id) == lines  # retried on every pass, still nothing posted
    market.store.put(file)  # anyone publishes the file under its revealed CID
    lines = restarted.step(market.task_id)
    assert len(lines) == 1 and lines[0].startswith("posted the payout root"), lines


# ---------------------------------------------------------------- the node boundary


def test_node_errors_past_the_checks_become_invalid_verdicts_and_others_propagate(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    market.propose()
    market.add_miners(1, epochs=1)
    assert market.miners[0].submit_round(market.task_id) is not None
    advance_to(market.w3, market.chain.task(market.task_id).round_end(0))

    def undecryptable(*args: object, **kwargs: object) -> None:
        raise EnvelopeError("a truncated wrap")

    def misfit(*args: object, **kwargs: object) -> None:
        raise SpecError("does not fit the data")

    monkeypatch.setattr(scorer_module, "check_update", undecryptable)
    evaluator = market.make_evaluator()
    view = evaluator.view(market.task_id)
    assert evaluator.verdict(view, 2) == Verdict(2, False, "undecryptable: a truncated wrap")
    monkeypatch.setattr(scorer_module, "scores", misfit)
    assert evaluator.node_result(view, 1, market.validation) == Score(
        node_id=1, valid=False, reason="spec: does not fit the data"
    )
    assert evaluator.step(market.task_id) == []  # the only update is invalid: nothing to merge

    monkeypatch.undo()  # the update is valid again, but scoring it while merging raises
    monkeypatch.setattr(scorer_module, "scores", misfit)
    again = market.make_evaluator()
    assert again.step(market.task_id) == [
        "round 0: no merge of architecture 1: does not fit the data"
    ]  # the round's merge for that architecture is skipped, and the loop goes on
    assert again.step(market.task_id) == []
    assert [r.kind for r in market.chain.nodes(market.task_id)] == [
        NodeKind.ARCHITECTURE,
        NodeKind.UPDATE,
    ]

    def unreachable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("cat: ConnectError after 4 tries")

    monkeypatch.setattr(scorer_module, "check_update", unreachable)
    third = market.make_evaluator()
    with pytest.raises(StoreUnavailable):  # not the node's fault: retried, never forfeited
        third.verdict(third.view(market.task_id), 2)


def test_a_sealed_validation_set_that_does_not_open_means_no_merge_and_no_exception(
    market: Market,
) -> None:
    market.propose()
    market.add_miners(1, epochs=1)
    assert market.miners[0].submit_round(market.task_id) is not None
    spec = read_spec(market.chain, market.store, market.task_id)
    sealed = market.store.root / spec.validation_cid[-3:-1] / spec.validation_cid
    sealed.write_bytes(b"corrupted" + sealed.read_bytes()[9:])
    market.make_evaluator()

    lines = market.end_round(0)

    assert len(lines) == 1 and lines[0].startswith(
        "no merges yet: the validation set sealed to this evaluator does not open: "
    ), lines
    assert [r.kind for r in market.chain.nodes(market.task_id)][-1] is NodeKind.UPDATE
