"""The dashboard in a real headless Chromium (Debian's `/usr/bin/chromium`, never a downloaded
browser), driven by Playwright: `marketplace serve` follows a small market over JSON-RPC while
the test drives it, and the open page keeps up without a reload.

Set GM_DASHBOARD_SCREENSHOT=path to keep the screenshot (the README's comes from this test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from marketplace.dev.devnet import free_port, wait_until_serving
from marketplace.dev.rpc_server import RpcServer
from marketplace.protocol.reports import agreed_report
from marketplace.rules.messages import NodeKind
from tests.market import Market, new_market
from tests.programs import BIN

CHROMIUM = Path("/usr/bin/chromium")
# As root in a sandbox with no network: no sandboxing of its own, no GPU, and none of the
# background connections a closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: `make setup` installs it")
    with sync_playwright() as playwright:
        # A fresh profile in a temporary folder each launch (Playwright's default).
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


class Service:
    """`marketplace serve` following `market` through an RPC server over its own chain."""

    def __init__(self, market: Market, folder: Path) -> None:
        self.market = market
        self.rpc = RpcServer(provider=market.w3.provider)  # type: ignore[arg-type]
        self.rpc.start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                *(str(BIN / "marketplace"), "serve", "--port", str(self.port)),
                *("--rpc", self.rpc.url, "--contract", market.chain.address),
                *("--confirmations", "0", "--poll", "0.2", "--data-dir", str(folder)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until_serving(self.url, self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.rpc.stop()


def watch(page: Page, origin: str) -> list[str]:
    """Errors the page logs or throws, and any request that leaves `origin`."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(origin) else problems.append(f"left the app: {r.url}"),
    )
    return problems


def test_the_dashboard_draws_the_market_and_follows_it_live(
    tmp_path: Path, browser: Browser
) -> None:
    market = new_market(tmp_path)
    service = Service(market, tmp_path)
    try:
        with service.rpc.exclusive():
            market.create(rounds=2)
            market.propose()
            market.make_evaluator()
            market.add_miners(3, epochs=1)
            market.run_rounds(1)
            first = len(market.chain.nodes(market.task_id))

        page = browser.new_page(viewport={"width": 1360, "height": 900})
        problems = watch(page, service.url)
        page.goto(f"{service.url}/#/")
        expect(page.locator("#open-tasks tbody tr")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator("#open-tasks tbody tr td").nth(1)).to_have_text("rounds")
        page.locator("#open-tasks tbody tr").click()
        expect(page.locator("#tree-count")).to_have_text(f"{first} nodes", timeout=WAIT_MS)
        expect(page.locator("#tree circle.node")).to_have_count(first)
        expect(page.locator("#leaderboard")).to_contain_text("No payout report yet")

        with service.rpc.exclusive():  # the rest of the task's life, the page left open
            for miner in market.miners:
                market.submit(miner)
            market.end_round(1)
            market.reveal()
            assert market.evaluator is not None
            market.evaluator.step(market.task_id)
            market.finalize()
            report = agreed_report(market.chain, market.store, market.task_id)
            # Every miner with a leaf claims it (the rule can owe an honest one nothing); the
            # architecture's author does not, so the table shows both states.
            claimants = [m for m in market.miners if report.entry_for(m.address) is not None]
            assert claimants and report.entry_for(market.scientist.address) is not None
            for miner in market.miners:
                miner.collect(market.task_id)
            nodes = market.chain.nodes(market.task_id)

        expect(page.locator("#tree-count")).to_have_text(f"{len(nodes)} nodes", timeout=WAIT_MS)
        expect(page.locator("#tree circle.node")).to_have_count(len(nodes))
        ids = {n.node_id for n in nodes}  # an edge from each parent (the architecture has none)
        edges = sum(1 for n in nodes for parent in n.parents if parent in ids)
        expect(page.locator("#tree line.edge")).to_have_count(edges)
        # The leaderboard lists the valid merges and architectures (an update never wins), and
        # the winner, a merge, heads it.
        board = [n for n in report.nodes if n.valid and n.kind is not NodeKind.UPDATE]
        assert {n.kind for n in board if n.node_id == report.winner} == {NodeKind.MERGE}
        winner = page.locator("#leaderboard tbody tr").first.locator("td.node")
        expect(winner).to_have_text(str(report.winner), timeout=WAIT_MS)
        expect(page.locator("#leaderboard tbody tr")).to_have_count(len(board))
        expect(page.locator("#leaderboard tbody tr").first.locator("td").nth(2)).to_have_text(
            "merge"
        )
        expect(page.locator("#tree circle.winner")).to_have_attribute(
            "data-node", str(report.winner)
        )
        expect(page.locator("#tree-winner")).to_have_text(
            f"Winner: node {report.winner} (gold ring)."
        )
        expect(page.locator("#payouts .claimed")).to_have_count(len(claimants))
        expect(page.locator("#payouts .unclaimed")).to_have_count(1)
        expect(page.locator("#payouts tbody tr")).to_have_count(len(report.payouts))
        expect(page.locator("#progress circle.score-dot")).to_have_count(
            sum(1 for n in report.nodes if n.valid)
        )
        expect(page.locator("#live")).to_have_text(
            f"live · block {market.w3.eth.block_number}", timeout=WAIT_MS
        )

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        if keep := os.environ.get("GM_DASHBOARD_SCREENSHOT"):
            shutil.copyfile(shot, keep)

        # The delivered model's card, which serve's follower built: a page of text, no script.
        # The follower builds it on the sync after the one that indexed the finalize and its
        # report (the page is rendered once, when asked): wait for the API to have it.
        assert report.delivery is not None
        _wait_for_card(service.url, market.task_id)
        page.locator("#card-link").click()
        expect(page.locator("h1")).to_have_text(
            f"Model card: task {market.task_id}, digits", timeout=WAIT_MS
        )
        expect(page.locator("pre")).to_contain_text(
            f"- weights sha256: {report.delivery.weights_sha256}"
        )
        assert problems == []
    finally:
        service.stop()


def test_the_page_runs_only_its_own_files(tmp_path: Path, browser: Browser) -> None:
    market = new_market(tmp_path)
    service = Service(market, tmp_path)
    try:
        page_reply = httpx.get(f"{service.url}/")
        assert page_reply.headers["content-security-policy"].startswith("default-src 'self'")
        assert page_reply.headers["x-content-type-options"] == "nosniff"
        for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            reply = httpx.get(f"{service.url}/static/{asset}")
            assert (reply.status_code, reply.headers["content-type"].split(";")[0]) == (200, kind)
        assert httpx.get(f"{service.url}/static/../api.py").status_code == 404
        page = browser.new_page()
        problems = watch(page, service.url)
        page.goto(f"{service.url}/#/tasks/7")
        expect(page.locator("h1")).to_have_text("No task 7", timeout=WAIT_MS)
        not_found = "Failed to load resource: the server responded with a status of 404 (Not Found)"
        assert problems == [not_found]  # the task itself; nothing more is asked for
    finally:
        service.stop()


def _wait_for_card(url: str, task_id: int) -> None:
    """Until the API serves task `task_id`'s card built after its finalize (or WAIT_MS)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        reply = httpx.get(f"{url}/api/v1/tasks/{task_id}/card")
        if reply.status_code == 200 and reply.json()["settlement"]["finalized_tx"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the API never served task {task_id}'s card")
