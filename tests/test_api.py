"""The REST API over the index of a settled market: every figure equals what the chain and the
agreed payout report say; bad ids, addresses and parameters are 4xx, never 500."""

from __future__ import annotations

import html
import os
import re
import sqlite3
import subprocess
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from web3 import Web3

from marketplace.chain.client import ChainClient
from marketplace.chain.events import Claimed, PayoutRootAgreed, TaskCreated, TaskFinalized
from marketplace.delivered.card_check import public_card
from marketplace.delivered.card_markdown import render_markdown
from marketplace.dev.devchain import advance_to, now
from marketplace.dev.devchain import tester_of as chain_tester
from marketplace.dev.devnet import free_port, start_devnet
from marketplace.protocol.reports import agreed_report
from marketplace.rules.messages import NodeKind, Phase
from marketplace.service import api
from marketplace.service.api import create_app
from marketplace.service.api_common import PhaseName
from marketplace.service.indexer import Indexer
from marketplace.wire.crypto import sha256
from marketplace.wire.report import PayoutReport
from tests.helpers import eth_task
from tests.market import Market, new_market
from tests.programs import BIN, script_output


class Served:
    def __init__(self, market: Market, index: Indexer, client: TestClient) -> None:
        self.market, self.index, self.client = market, index, client

    def get(self, path: str, **params: object) -> typing.Any:
        reply = self.client.get(path, params=params)  # type: ignore[arg-type]
        assert reply.status_code == 200, reply.text
        return reply.json()

    @property
    def report(self) -> PayoutReport:
        return agreed_report(self.market.chain, self.market.store, self.market.task_id)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("api")
    market = new_market(folder)
    market.run_to_claims(miners=3, claimants=2)  # the third never claims
    index = Indexer(market.chain, folder / "index.sqlite", confirmations=0, store=market.store)
    index.sync()
    w3 = market.w3
    app = create_app(folder / "index.sqlite", lambda: (int(w3.eth.block_number), now(w3)))
    with TestClient(app) as client:
        yield Served(market, index, client)
    index.close()


def test_health_shows_the_indexed_block_next_to_the_head(served: Served) -> None:
    head = served.market.w3.eth.block_number
    assert served.get("/api/v1/health") == {
        "indexed_block": head,
        "chain_head": head,
        "chain_time": now(served.market.w3),
        "lag": 0,
    }


def test_tasks_lists_filters_and_pages(served: Served) -> None:
    chain, sponsor = served.market.chain, served.market.sponsor.address
    page = served.get("/api/v1/tasks")
    assert (page["total"], page["offset"], page["limit"]) == (1, 0, 50)
    (item,) = page["items"]
    assert item == {
        "task_id": 1,
        "sponsor": sponsor,
        "token": "0x" + "00" * 20,
        "bounty": str(chain.task(1).bounty),
        "deposit": str(chain.task(1).deposit),
        "phase": chain.phase(1).name.lower(),
        "start": chain.task(1).start,
        "rounds": 2,
        "rounds_end": chain.task(1).rounds_end,
        "nodes": len(chain.nodes(1)),
        "spec_cid": chain.events(TaskCreated, task_id=1)[0].spec_cid,
    }
    assert served.get("/api/v1/tasks", sponsor=sponsor.lower())["total"] == 1
    assert served.get("/api/v1/tasks", sponsor="0x" + "11" * 20)["total"] == 0
    assert served.get("/api/v1/tasks", phase="claims")["total"] == 1
    assert served.get("/api/v1/tasks", phase="rounds")["total"] == 0
    assert served.get("/api/v1/tasks", offset=1)["items"] == []


def test_one_task_has_its_phase_settlement_and_phase_spans(served: Served) -> None:
    chain = served.market.chain
    state = chain.task(1)
    task = served.get("/api/v1/tasks/1")
    assert task["phase"] == chain.phase(1).name.lower() == "claims"
    (agreed,) = chain.events(PayoutRootAgreed, task_id=1)
    assert task["settled_at"] == served.market.w3.eth.get_block(agreed.block_number)["timestamp"]
    assert task["settled_at"] == state.agreed_at
    assert task["finalized_at"] == state.finalized_at  # finalize restarts the clock for claims
    assert task["payout_root"] == "0x" + state.payout_root.hex()
    assert task["evaluators"] == [served.market.evaluator_account.address]
    spans = {span["phase"]: (span["starts"], span["ends"]) for span in task["phases"]}
    assert spans["rounds"] == (state.start, state.rounds_end)
    assert spans["reveal"] == (state.rounds_end, state.reveal_deadline)
    assert spans["evaluation"] == (state.revealed_at, state.evaluation_deadline)  # from the reveal
    challenge_end = task["settled_at"] + state.challenge_window
    assert spans["challenge"] == (task["settled_at"], challenge_end)
    assert spans["claims"] == (state.finalized_at, state.claim_deadline)


def test_the_tree_has_every_node_with_the_agreed_reports_scores(served: Served) -> None:
    report = served.report
    tree = served.get("/api/v1/tasks/1/tree")
    records = {r.node_id: r for r in served.market.chain.nodes(1)}
    assert [n["node_id"] for n in tree["nodes"]] == sorted(records)
    assert (tree["winner"], tree["agreed"]) == (report.winner, True)
    verdicts = {v.node_id: v for v in report.nodes}
    for node in tree["nodes"]:
        record, verdict = records[node["node_id"]], verdicts[node["node_id"]]
        assert (node["kind"], node["author"], node["parents"]) == (
            record.kind.name.lower(),
            record.author,
            list(record.parents),
        )
        assert (node["valid"], node["score"], node["gain"]) == (
            verdict.valid,
            verdict.score,
            verdict.gain,
        )


def test_the_tree_comes_in_pages_by_node_id_when_asked(served: Served) -> None:
    whole = served.get("/api/v1/tasks/1/tree")
    assert whole["next_after"] is None and len(whole["nodes"]) >= 5
    pages, after = [], 0
    while after is not None:
        page = served.get("/api/v1/tasks/1/tree", after=after, limit=2)
        pages.append(page)
        after = page["next_after"]
    assert [n for page in pages for n in page["nodes"]] == whole["nodes"]
    assert [len(page["nodes"]) for page in pages[:-1]] == [2] * (len(pages) - 1)
    assert {(p["winner"], p["agreed"]) for p in pages} == {(whole["winner"], whole["agreed"])}
    last = whole["nodes"][-1]["node_id"]
    assert served.get("/api/v1/tasks/1/tree", after=last)["nodes"] == []


def test_the_leaderboard_ranks_valid_models_and_leads_with_the_winner(served: Served) -> None:
    report = served.report
    board = served.get("/api/v1/tasks/1/leaderboard", limit=3)
    # The models a sponsor can be given: merges and architectures (an update never wins).
    models = [v for v in report.nodes if v.valid and v.kind is not NodeKind.UPDATE]
    scores = sorted(((v.score, v.gain, -v.node_id) for v in models), reverse=True)
    assert [(e["score"], e["gain"], -e["node_id"]) for e in board["entries"]] == scores[:3]
    assert [e["rank"] for e in board["entries"]] == [1, 2, 3]
    assert board["entries"][0]["node_id"] == report.winner


def test_the_payout_table_is_enough_to_claim(served: Served) -> None:
    chain, report = served.market.chain, served.report
    table = served.get("/api/v1/tasks/1/payouts")
    assert (table["root"], table["total"]) == (report.root, str(report.total))
    assert len(table["payouts"]) == len(report.payouts)
    for row, entry in zip(table["payouts"], report.payouts, strict=True):
        assert (row["leaf"], row["account"], row["amount"], row["proof"]) == (
            entry.index,
            entry.account,
            str(entry.amount),
            list(entry.proof),
        )
        assert row["claimed"] == chain.is_claimed(1, entry.index)
    assert any(not row["claimed"] for row in table["payouts"])  # the third miner's


def test_an_account_shows_its_submissions_earnings_and_reputation(served: Served) -> None:
    chain = served.market.chain
    claimants = {e.account for e in chain.events(Claimed, task_id=1)}
    miner = next(m.address for m in served.market.miners if m.address in claimants)
    view = served.get(f"/api/v1/accounts/{miner.lower()}")
    assert view["address"] == miner
    mine = [r for r in chain.nodes(1) if r.author == miner]
    assert [(s["node_id"], s["round"]) for s in view["submissions"]] == [
        (r.node_id, r.round) for r in mine
    ]
    claimed = [e for e in chain.events(Claimed, task_id=1) if e.account == miner]
    eth = "0x" + "00" * 20
    assert view["earned"] == {eth: str(sum(e.amount for e in claimed))}
    assert view["reputation"] == str(chain.reputation(miner))
    assert [c["leaf"] for c in view["claims"]] == [e.index for e in claimed]
    assert (view["submission_count"], view["claim_count"]) == (len(mine), len(claimed))
    nobody = served.get(f"/api/v1/accounts/0x{'22' * 20}")
    assert (nobody["submissions"], nobody["earned"], nobody["claims"]) == ([], {}, [])
    assert (nobody["submission_count"], nobody["claim_count"]) == (0, 0)


def test_an_accounts_submissions_and_claims_come_in_pages(served: Served) -> None:
    miner = served.market.miners[0].address
    whole = served.get(f"/api/v1/accounts/{miner}")
    assert whole["submission_count"] >= 2
    pages = [
        served.get(f"/api/v1/accounts/{miner}", offset=offset, limit=1)
        for offset in range(whole["submission_count"] + 1)
    ]
    assert [s for page in pages for s in page["submissions"]] == whole["submissions"]
    assert [c for page in pages for c in page["claims"]] == whole["claims"]
    assert pages[-1]["submissions"] == []
    assert {(p["submission_count"], p["claim_count"], p["limit"]) for p in pages} == {
        (whole["submission_count"], whole["claim_count"], 1)
    }


def test_the_card_is_the_public_card_of_the_delivered_model_with_its_finalize(
    served: Served,
) -> None:
    market = served.market
    card = public_card(market.chain, market.store, 1)
    assert card is not None and card.model.winner == served.report.winner
    [finalized] = market.chain.events(TaskFinalized, task_id=1)
    assert card.settlement.finalized_tx == finalized.tx_hash
    reply = served.client.get("/api/v1/tasks/1/card")
    assert (reply.status_code, reply.headers["content-type"]) == (200, "application/json")
    assert reply.content == card.model_dump_json().encode()


def test_the_card_page_shows_the_winner_s_weights_digest_and_every_payout_in_wei(
    served: Served,
) -> None:
    card = public_card(served.market.chain, served.market.store, 1)
    assert card is not None
    reply = served.client.get("/tasks/1/card")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    assert {key: reply.headers[key] for key in api.PAGE_HEADERS} == api.PAGE_HEADERS
    assert f"- weights sha256: {card.model.weights_sha256}\n" in reply.text
    assert html.escape(render_markdown(card)) in reply.text
    paid = {e.account: e.amount for e in served.report.payouts}
    assert sum(paid.values()) > 0
    for contributor in card.contributors:
        assert contributor.amount == paid.get(contributor.account, 0)
        line = next(x for x in reply.text.splitlines() if x.startswith(f"| {contributor.account}"))
        assert f" | {contributor.amount} | " in line
    assert "<script" not in reply.text


def test_the_card_page_puts_markup_from_the_chain_in_as_text(
    served: Served, tmp_path: Path
) -> None:
    card = public_card(served.market.chain, served.market.store, 1)
    assert card is not None
    name, author = "<script>alert(1)</script>", '<img src=x onerror="alert(2)">'
    forged = card.model_copy(
        update={
            "task_name": name,
            "model": card.model.model_copy(update={"architecture_author": author}),
        }
    )
    copy = sqlite3.connect(tmp_path / "copy.sqlite")
    served.index.db.backup(copy)
    copy.execute("UPDATE cards SET card = ? WHERE task_id = 1", (forged.model_dump_json(),))
    copy.commit()
    copy.close()
    client = TestClient(create_app(tmp_path / "copy.sqlite", lambda: None))
    text = client.get("/tasks/1/card").text
    assert "<script" not in text and "<img" not in text
    assert f"<title>Model card: task 1, {html.escape(name)}</title>" in text
    assert f"- architecture: node 1 by {html.escape(author)}\n" in text
    assert client.get("/api/v1/tasks/1/card").json()["task_name"] == name  # JSON: as it is


def test_a_task_without_an_agreed_root_has_no_card_yet(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    market.create(rounds=1)
    index = Indexer(market.chain, tmp_path / "i.sqlite", confirmations=0, store=market.store)
    index.sync()
    client = TestClient(create_app(tmp_path / "i.sqlite", lambda: None))
    reply = client.get("/api/v1/tasks/1/card")
    assert reply.status_code == 404
    assert reply.json() == {
        "detail": "task 1 has no model card yet: there is one once a root is agreed whose "
        "report delivers a model that holds"
    }
    page = client.get("/tasks/1/card")
    assert page.status_code == 404 and "has no model card yet" in page.text
    assert {key: page.headers[key] for key in api.PAGE_HEADERS} == api.PAGE_HEADERS
    assert client.get("/tasks/2/card").status_code == 404
    index.close()


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/v1/tasks/99", 404, "no task 99"),
        ("/api/v1/tasks/99/tree", 404, "no task 99"),
        ("/api/v1/tasks/0", 422, "greater than or equal to 1"),
        ("/api/v1/tasks/abc", 422, "valid integer"),
        ("/api/v1/tasks/99999999999999999999", 422, "less than or equal to"),
        ("/api/v1/tasks?sponsor=0x123", 422, "should match pattern"),
        ("/api/v1/tasks?phase=later", 422, "'rounds'"),
        ("/api/v1/tasks?limit=0", 422, "greater than or equal to 1"),
        ("/api/v1/accounts/alice", 422, "should match pattern"),
        (f"/api/v1/accounts/0x{'22' * 20}?limit=1001", 422, "less than or equal to 1000"),
        ("/api/v1/tasks/99/leaderboard", 404, "no task 99"),
        ("/api/v1/tasks/1/tree?limit=0", 422, "greater than or equal to 1"),
        ("/api/v1/tasks/1/tree?after=-1", 422, "greater than or equal to 0"),
        ("/api/v1/tasks/99/payouts", 404, "no task 99"),
        ("/api/v1/tasks/99/card", 404, "no task 99"),
        ("/tasks/99/card", 404, "no task 99"),
        ("/api/v1/tasks/0/card", 422, "greater than or equal to 1"),
    ],
)
def test_bad_requests_are_4xx_with_a_message(
    served: Served, path: str, status: int, message: str
) -> None:
    reply = served.client.get(path)
    assert reply.status_code == status
    assert message in reply.text


def test_phase_names_are_the_contracts_phases() -> None:
    assert list(typing.get_args(PhaseName)) == [p.name.lower() for p in Phase if p.value]


def test_the_api_phase_follows_the_contracts_through_a_task_life(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    chain, w3 = market.chain, market.w3
    evaluator = market.evaluator_account.address
    chain.create_task(market.sponsor.address, eth_task(evaluator, deposit=0))
    index = Indexer(chain, tmp_path / "i.sqlite", confirmations=0)
    app = create_app(tmp_path / "i.sqlite", lambda: (int(w3.eth.block_number), now(w3)))
    client = TestClient(app)
    state = chain.task(1)
    seen = []
    for moment in (state.start, state.rounds_end, state.reveal_deadline):
        advance_to(w3, moment)
        index.sync()
        seen.append((client.get("/api/v1/tasks/1").json()["phase"], chain.phase(1)))
    assert [(api, contract.name.lower()) for api, contract in seen] == [
        ("rounds", "rounds"),
        ("reveal", "reveal"),
        ("unrevealed", "unrevealed"),
    ]
    index.close()


def test_serve_follows_the_chain_and_answers_over_http(tmp_path: Path) -> None:
    devnet = start_devnet(tmp_path / "d", port=0)
    port = free_port()
    server = subprocess.Popen(
        [
            *(str(BIN / "marketplace"), "serve", "--port", str(port), "--confirmations", "0"),
            *("--poll", "0.2", "--data-dir", str(tmp_path / "d")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        chain = ChainClient(Web3(Web3.HTTPProvider(devnet.info.rpc_url)), devnet.info.contract)
        sponsor, evaluator = (a.address for a in devnet.info.accounts[:2])
        chain.create_task(sponsor, eth_task(evaluator))
        url = f"http://127.0.0.1:{port}/api/v1"

        def tasks() -> int:
            try:
                return int(httpx.get(f"{url}/tasks", timeout=2).json()["total"])
            except httpx.HTTPError:
                return -1

        deadline = time.monotonic() + 30
        while tasks() != 1:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout
            time.sleep(0.2)
        chain.create_task(sponsor, eth_task(evaluator))  # followed live
        while tasks() != 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        health = httpx.get(f"{url}/health").json()
        assert health["indexed_block"] == health["chain_head"] == chain.w3.eth.block_number
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
        devnet.stop()


def test_task_views_are_rebuilt_when_their_task_changes_and_only_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = new_market(tmp_path)
    chain, w3 = market.chain, market.w3
    chain.create_task(market.sponsor.address, eth_task(market.evaluator_account.address))
    index = Indexer(chain, tmp_path / "i.sqlite", confirmations=0)
    index.sync()
    built: list[str] = []
    of = api.Body.of
    monkeypatch.setattr(
        api.Body, "of", lambda model: built.append(type(model).__name__) or of(model)
    )
    client = TestClient(create_app(tmp_path / "i.sqlite", lambda: (0, now(w3))))
    first = client.get("/api/v1/tasks/1/tree")
    assert (first.json()["nodes"], first.headers["content-encoding"]) == ([], "gzip")
    tag = first.headers["etag"]
    assert client.get("/api/v1/tasks/1/tree", headers={"if-none-match": tag}).status_code == 304
    plain = client.get("/api/v1/tasks/1/tree", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == first.content
    chain.create_task(market.sponsor.address, eth_task(market.evaluator_account.address))
    index.sync()  # task 2's events: task 1's views stay
    assert client.get("/api/v1/tasks/1/tree").headers["etag"] == tag
    assert built == ["Tree"]

    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    chain.propose_architecture(market.scientist.address, 1, sha256(b"arch"), cid)
    index.sync()
    moved = client.get("/api/v1/tasks/1/tree", headers={"if-none-match": tag})
    assert moved.status_code == 200 and moved.headers["etag"] != tag
    assert [n["kind"] for n in moved.json()["nodes"]] == ["architecture"]
    assert client.get("/api/v1/tasks/1/leaderboard").json()["entries"] == []
    assert client.get("/api/v1/tasks/1/leaderboard", params={"limit": 5}).status_code == 200
    assert built == ["Tree", "Tree", "Leaderboard", "Leaderboard"]
    index.close()


def test_a_reorg_that_keeps_the_row_counts_still_rebuilds_the_tree(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    chain, w3 = market.chain, market.w3
    chain.create_task(market.sponsor.address, eth_task(market.evaluator_account.address))
    index = Indexer(chain, tmp_path / "i.sqlite", confirmations=0)
    index.sync()
    client = TestClient(create_app(tmp_path / "i.sqlite", lambda: (0, now(w3))))
    tester = chain_tester(w3)
    fork_point = tester.take_snapshot()
    cids = [f"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk{c}" for c in "ua"]
    chain.propose_architecture(market.scientist.address, 1, sha256(b"old"), cids[0])
    index.sync()
    assert [n["cid"] for n in client.get("/api/v1/tasks/1/tree").json()["nodes"]] == cids[:1]
    tester.revert_to_snapshot(fork_point)  # the same count of events, in a new block
    chain.propose_architecture(market.scientist.address, 1, sha256(b"new"), cids[1])
    tester.mine_blocks(1)
    assert index.sync().unwound == 1
    assert [n["cid"] for n in client.get("/api/v1/tasks/1/tree").json()["nodes"]] == cids[1:]
    index.close()


@pytest.mark.engines
def test_the_load_script_serves_a_scored_task_to_wrk_and_reports_percentiles() -> None:
    output = script_output(
        "load_api.py", "--nodes", "60", "--clients", "10", "--seconds", "1", "--rounds", "1"
    )
    assert "60 nodes; the tree is" in output
    last = output.strip().splitlines()[-1]
    number = r"([0-9]+\.[0-9])"
    match = re.fullmatch(
        rf"LOAD nodes=60 clients=10 tree_p50_ms={number} tree_p99_ms={number} "
        rf"leaderboard_p50_ms={number} leaderboard_p99_ms={number} "
        rf"health_p50_ms={number} health_p99_ms={number}",
        last,
    )
    assert match, last
    p50s, p99s = [float(x) for x in match.groups()[::2]], [float(x) for x in match.groups()[1::2]]
    assert all(0 < p50 <= p99 for p50, p99 in zip(p50s, p99s, strict=True))


def test_the_head_file_hands_the_followers_head_to_the_workers(tmp_path: Path) -> None:
    writer, reader = api.HeadFile(tmp_path / "i.head"), api.HeadFile(tmp_path / "i.head")
    assert reader.read() is None  # no follower yet
    writer.write((12, 1_700_000_000))
    assert reader.read() == (12, 1_700_000_000)
    writer.write(None)  # the node stopped answering
    assert reader.read() is None
    writer.write((13, 1_700_000_012))
    assert reader.read() == (13, 1_700_000_012)
    old = time.time() - api.HeadFile.STALE_SECONDS - 1
    os.utime(writer.path, (old, old))  # the follower went silent
    assert reader.read() is None
