"""Issue 17: the sponsor gets the model it paid for. The whole market on eth-tester to
`pull_model`: the delivered weights are the winner's, the card's lineage, gains and payouts
are the report's and hold against the chain, and nobody but the sponsor opens the delivery."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.chain.events import PayoutRootPosted, TaskCreated, TaskFinalized
from marketplace.delivered.card import ModelCard, lineage
from marketplace.delivered.card_check import check_card
from marketplace.delivered.card_markdown import render_markdown
from marketplace.delivered.delivery import delivery_mismatch, open_delivery
from marketplace.delivered.modeldir import ModelFiles
from marketplace.errors import DeliveryError, EnvelopeError, IntegrityError
from marketplace.protocol.reports import agreed_report
from marketplace.protocol.tasks import account_key, miner_key, nodes_by_id, read_spec
from marketplace.roles.sponsor import pull_model
from marketplace.roles.verify import verify_task
from marketplace.rules.datafiles import load_dataset, to_csv
from marketplace.rules.evaluation import score
from marketplace.rules.messages import NodeKind
from marketplace.wire.codec import weights_digest
from marketplace.wire.report import PayoutReport
from tests.market import Market, new_market


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Market, PayoutReport]:
    """Two rounds of three miners, revealed, settled and finalized."""
    market = new_market(tmp_path_factory.mktemp("delivery"))
    market.create(rounds=2)
    market.propose()
    evaluator = market.make_evaluator()
    market.add_miners(3, epochs=1)
    market.run_rounds(2)
    market.reveal()
    evaluator.step(market.task_id)
    market.finalize()
    return market, agreed_report(market.chain, market.store, market.task_id)


@pytest.fixture(scope="module")
def pulled(settled: tuple[Market, PayoutReport]) -> ModelFiles:
    market, _ = settled
    return pull_model(
        market.connection(market.sponsor),
        market.task_id,
        test=to_csv(market.test),
    )


def test_the_sponsor_pulls_the_weights_of_the_winner_it_paid_for(
    settled: tuple[Market, PayoutReport], pulled: ModelFiles
) -> None:
    market, report = settled
    records = nodes_by_id(market.chain, market.task_id)
    assert report.winner is not None and report.delivery is not None
    winner = records[report.winner]
    assert winner.kind is NodeKind.MERGE  # two rounds of training beat the initial weights
    digest = weights_digest(pulled.weights)
    assert digest == winner.plaintext_digest
    assert digest.hex() == report.delivery.weights_sha256 == pulled.card.model.weights_sha256
    assert report.delivery.node_id == report.winner == pulled.card.model.winner
    validation = load_dataset(to_csv(market.validation), pulled.card.data, 1 << 26)
    scored = next(n.score for n in report.nodes if n.node_id == report.winner)
    assert score(pulled.spec, pulled.weights, validation, pulled.card.metric) == scored
    assert pulled.card.validation.score == scored
    assert pulled.card.validation.rows == len(market.validation)


def test_the_card_s_lineage_gains_and_payouts_are_the_report_s(
    settled: tuple[Market, PayoutReport], pulled: ModelFiles
) -> None:
    market, report = settled
    assert report.winner is not None
    records = nodes_by_id(market.chain, market.task_id)
    card = pulled.card
    verdicts = {n.node_id: n for n in report.nodes}
    ids = lineage(records, report.winner)
    assert [n.node_id for n in card.lineage] == ids
    assert ids[0] == card.model.architecture == 1 and ids[-1] == report.winner
    for node in card.lineage:
        verdict = verdicts[node.node_id]
        assert (node.score, node.gain) == (verdict.score, verdict.gain)
        assert node.author == records[node.node_id].author
    authors = {records[i].author for i in ids}
    assert {c.account for c in card.contributors} == authors
    for contributor in card.contributors:
        entry = report.entry_for(contributor.account)
        if contributor.account == market.evaluator_account.address:  # the merges' author
            assert entry is None and contributor.amount == contributor.points == 0
            assert contributor.kinds == ("merge",) and contributor.gain == 0  # credited to updates
            continue
        assert entry is not None
        parts = (entry.amount, entry.points, entry.expertise, entry.data, entry.compute)
        said = (contributor.amount, contributor.points, contributor.expertise, contributor.data)
        assert said + (contributor.compute,) == parts
        assert contributor.gain == sum(verdicts[i].gain for i in contributor.nodes)
        assert contributor.kinds == tuple(
            {records[i].kind.name.lower(): 0 for i in contributor.nodes}
        )
    scientist = next(c for c in card.contributors if c.account == market.scientist.address)
    assert scientist.nodes == (1,) and scientist.expertise > 0
    settlement = card.settlement
    chain = market.chain
    assert settlement.payout_root == report.root and settlement.payout_total == report.total
    [created] = chain.events(TaskCreated, task_id=market.task_id)
    [finalized] = chain.events(TaskFinalized, task_id=market.task_id)
    [posted] = chain.events(PayoutRootPosted, task_id=market.task_id)
    assert settlement.created_tx == created.tx_hash
    assert settlement.finalized_tx == finalized.tx_hash
    assert settlement.root_txs == (posted.tx_hash,)
    assert settlement.report_evaluator == market.evaluator_account.address
    assert (settlement.chain_id, settlement.contract) == (market.chain_id, chain.address)


def test_a_card_holds_against_the_chain_and_one_altered_number_fails(
    settled: tuple[Market, PayoutReport], pulled: ModelFiles
) -> None:
    market, _ = settled
    card = pulled.card
    markdown = render_markdown(card)
    assert check_card(market.chain, market.store, card, markdown) == []
    assert check_card(market.chain, market.store, ModelCard.from_bytes(card.to_bytes())) == []

    first = card.contributors[0]
    richer = first.model_copy(update={"amount": first.amount + 1})
    altered = card.model_copy(update={"contributors": (richer, *card.contributors[1:])})
    assert check_card(market.chain, market.store, altered) == [
        f"contributors[0].amount: the card says {first.amount + 1}, the chain {first.amount}"
    ]
    node = card.lineage[-1]
    lifted = card.model_copy(
        update={"lineage": (*card.lineage[:-1], node.model_copy(update={"gain": node.gain + 1}))}
    )
    assert check_card(market.chain, market.store, lifted) == [
        f"lineage[{len(card.lineage) - 1}].gain: the card says {node.gain + 1}, "
        f"the chain {node.gain}"
    ]
    line = f"| {first.account} |"
    assert line in markdown
    edited = markdown.replace(f"| {first.amount} |", f"| {first.amount + 1} |", 1)
    problems = check_card(market.chain, market.store, card, edited)
    assert len(problems) == 1 and problems[0].startswith("MODEL_CARD.md line ")
    assert str(first.amount + 1) in problems[0]


def test_the_test_score_is_the_winner_s_on_the_test_split(
    settled: tuple[Market, PayoutReport], pulled: ModelFiles
) -> None:
    market, _ = settled
    assert pulled.card.test is not None
    test = load_dataset(to_csv(market.test), pulled.card.data, 1 << 26)
    assert pulled.card.test.rows == len(market.test) == len(test)
    expected = score(pulled.spec, pulled.weights, test, pulled.card.metric)
    assert pulled.card.test.score == expected
    assert f"({expected:,} of {len(test):,} rows)" in render_markdown(pulled.card)


def test_a_stranger_and_a_miner_cannot_open_the_delivered_model(
    settled: tuple[Market, PayoutReport], pulled: ModelFiles
) -> None:
    market, report = settled
    assert report.delivery is not None
    stranger, miner = market.keys[8], market.miners[0].account
    for who in (stranger, miner):
        with pytest.raises(DeliveryError, match="not a recipient"):
            pull_model(market.connection(who), market.task_id)
    spec = read_spec(market.chain, market.store, market.task_id)
    for key in (account_key(miner), miner_key(miner, market.task_id), account_key(stranger)):
        with pytest.raises(EnvelopeError, match="not a recipient"):
            open_delivery(
                market.store,
                report.delivery,
                market.evaluator_account.address,
                key,
                pulled.spec,
                market.task_id,
                market.chain_id,
                spec.max_blob_bytes,
            )


def test_verify_checks_the_delivery_is_the_scored_winner(
    settled: tuple[Market, PayoutReport], pulled: ModelFiles
) -> None:
    market, report = settled
    result = verify_task(market.chain, market.store, market.task_id, market.chain_id)
    [check] = [c for c in result.checks if c.name.endswith(" delivery")]
    assert check.ok and check.detail == f"node {report.winner}'s weights, sealed to the sponsor"
    assert report.delivery is not None and report.winner is not None
    spec = read_spec(market.chain, market.store, market.task_id)
    evaluator = market.evaluator_account.address
    other = report.delivery.model_copy(update={"weights_sha256": "00" * 32})
    scored = bytes.fromhex(report.delivery.weights_sha256)
    assert delivery_mismatch(other, report.winner, spec, evaluator, scored, market.store) == (
        f"it delivers weights {'0' * 16}..., node {report.winner} scored others"
    )
    assert delivery_mismatch(None, report.winner, spec, evaluator, scored, market.store) == (
        f"no delivery of the winner, node {report.winner}"
    )
    stranger = market.keys[8].address
    assert delivery_mismatch(
        report.delivery, report.winner, spec, stranger, scored, market.store
    ) == (f"the delivery is signed by {evaluator}, not the report's evaluator")


def test_nothing_is_delivered_before_a_root_is_agreed(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    market.create(rounds=1)
    with pytest.raises(IntegrityError, match="has no agreed payout root yet"):
        pull_model(market.connection(market.sponsor), market.task_id)


def test_the_pulled_model_predicts_the_test_split_and_exports_to_an_agreeing_graph(
    settled: tuple[Market, PayoutReport], pulled: ModelFiles, tmp_path: Path
) -> None:
    """What the sponsor does next: predict on the demo's test split (the winner's test
    accuracy, exactly) and export to ONNX (every validation row predicts the same class)."""
    from marketplace.delivered import inference
    from marketplace.delivered.modeldir import CARD_MD, read_model, write_model

    market, _ = settled
    assert write_model(tmp_path, pulled) == tmp_path / CARD_MD
    files = read_model(tmp_path)
    assert weights_digest(files.weights) == weights_digest(pulled.weights)
    (tmp_path / "test.csv").write_bytes(to_csv(market.test))
    predicted = inference.predict_file(
        files, inference.load_data(tmp_path / "test.csv", files.card)
    )
    assert pulled.card.test is not None and predicted.score == pulled.card.test.score
    (tmp_path / "val.csv").write_bytes(to_csv(market.validation))
    validation = inference.load_data(tmp_path / "val.csv", files.card)
    check = inference.check_onnx(inference.export_onnx(files), files, validation)
    assert check.ok and check.rows == len(market.validation) and check.disagreeing_rows == ()
    assert check.max_difference <= check.tolerance
