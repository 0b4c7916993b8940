"""The privacy ledger: a DP budget per dataset, kept across restarts, tasks and accounts, and
checked before any training."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from marketplace.errors import ConfigError
from marketplace.rules.datafiles import Dataset
from marketplace.service.api import create_app
from marketplace.service.indexer import Indexer
from miner.cli import app as miner_app
from miner.ledger import PrivacyBudgetExceeded, PrivacyLedger, fingerprint
from miner.submission import epsilon_millis
from tests.market import new_market

KEY = "chain 1 0xabc task {} round {}"


def test_a_dataset_is_known_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("x,label\n1,0\n2,1\n")
    copy = tmp_path / "elsewhere" / "a.csv"
    copy.parent.mkdir()
    shutil.copyfile(data, copy)
    assert fingerprint(data) == fingerprint(copy)
    copy.write_text("x,label\n1,0\n2,0\n")
    assert fingerprint(data) != fingerprint(copy)
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copyfile(data, folder / "a.csv")
    before = fingerprint(folder)
    (folder / "b.csv").write_text("x,label\n3,1\n")
    assert fingerprint(folder) != before
    rows = Dataset(np.zeros((2, 1), dtype=np.float32), np.array([0, 1]), num_classes=2)
    same = Dataset(np.zeros((2, 1), dtype=np.float32), np.array([0, 1]), num_classes=2)
    assert fingerprint(rows) == fingerprint(same) != fingerprint(data)


def test_spends_add_up_to_the_budget_and_no_further(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json", budget=5.0)
    ledger.reserve("d", KEY.format(1, 0), 2.0, 1e-5)
    ledger.reserve("d", KEY.format(1, 0), 2.0, 1e-5)  # the same submission after a restart
    ledger.reserve("d", KEY.format(2, 0), 3.0, 1e-5)  # another task: the same budget
    assert (ledger.spent("d").epsilon, len(ledger.spent("d").spends)) == (5.0, 2)
    with pytest.raises(PrivacyBudgetExceeded, match=r"to 5\.500, past its budget of 5"):
        ledger.reserve("d", KEY.format(1, 1), 0.5, 1e-5)
    ledger.reserve("other", KEY.format(1, 1), 0.5, 1e-5)  # another dataset: its own budget
    again = PrivacyLedger(tmp_path / "ledger.json", budget=5.0)  # a restart reads it all back
    assert again.spent("d").epsilon == 5.0 and again.spent("other").epsilon == 0.5
    assert again.spent("d").delta == pytest.approx(2e-5)


def test_the_accountants_figure_replaces_the_reservation_once(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json", budget=5.0)
    ledger.reserve("d", KEY.format(1, 0), 3.0, 1e-5)
    ledger.settle("d", KEY.format(1, 0), 2.75)
    ledger.settle("d", KEY.format(1, 0), 1.0)  # settled already: kept
    spend = PrivacyLedger(tmp_path / "ledger.json").spent("d").spends[KEY.format(1, 0)]
    assert (spend.epsilon, spend.measured) == (2.75, True)


def test_training_without_dp_after_dp_is_refused(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    ledger.reserve("fresh", KEY.format(1, 0), None, 0.0)  # never under DP: nothing to count
    assert ledger.spent("fresh").spends == {}
    ledger.reserve("d", KEY.format(1, 0), 1.0, 1e-5)
    with pytest.raises(PrivacyBudgetExceeded, match="without DP now would void that"):
        ledger.reserve("d", KEY.format(1, 1), None, 0.0)


def test_a_damaged_ledger_or_budget_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text('{"datasets": {"d": {"spends": {"k": {"epsilon": -1, "delta": 0}}}}}')
    with pytest.raises(ConfigError, match="is damaged"):
        PrivacyLedger(path)
    with pytest.raises(ConfigError, match="must be positive"):
        PrivacyLedger(tmp_path / "new.json", budget=0)


def test_a_miner_is_stopped_before_training_past_its_budget(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    market.create(rounds=3)
    market.propose()
    market.make_evaluator()
    ledger = PrivacyLedger(tmp_path / "state" / "privacy-ledger.json", budget=5.0)
    market.add_miners(1, epochs=1, dp_epsilon=3.0, ledger=ledger)
    miner = market.miners[0]
    first = miner.submit_round(market.task_id)
    assert first is not None and first.epsilon is not None and 0 < first.epsilon <= 3.0
    data = tmp_path / "private" / "miner-0.csv"
    (spend,) = ledger.spent(fingerprint(data)).spends.values()
    assert (spend.epsilon, spend.measured) == (pytest.approx(first.epsilon), True)
    # The chain records the spend with the node, rounded up to thousandths; the API shows it.
    (record,) = [r for r in market.chain.nodes(market.task_id) if r.node_id == first.node_id]
    assert record.epsilon_millis == epsilon_millis(first.epsilon) == math.ceil(first.epsilon * 1000)
    index = Indexer(market.chain, tmp_path / "index.sqlite", confirmations=0)
    index.sync()
    tree = TestClient(create_app(tmp_path / "index.sqlite", lambda: None)).get(
        f"/api/v1/tasks/{market.task_id}/tree"
    )
    epsilons = {n["node_id"]: n["epsilon"] for n in tree.json()["nodes"]}
    assert epsilons == {1: None, first.node_id: record.epsilon_millis / 1000}
    index.close()

    market.end_round(0)
    nodes = len(market.chain.nodes(market.task_id))
    with pytest.raises(PrivacyBudgetExceeded, match="past its budget of 5"):
        market.submit(miner)
    assert len(market.chain.nodes(market.task_id)) == nodes  # nothing trained or sent
    assert list((tmp_path / "state" / "sealed").glob("*")) == []  # nothing sealed either

    # The same data under another account and without DP: refused too.
    market.add_miners(1, epochs=1, ledger=ledger)
    market.miners[1].data = data
    with pytest.raises(PrivacyBudgetExceeded, match="without DP"):
        market.submit(market.miners[1])

    shown = CliRunner().invoke(
        miner_app, ["privacy", "--data", str(data), "--data-dir", str(tmp_path), "--dp-budget", "5"]
    )
    assert shown.exit_code == 0, shown.output
    assert f"task {market.task_id} round 0: epsilon {first.epsilon:.3f} (measured)" in shown.output
    assert f"spent epsilon {first.epsilon:.3f}" in shown.output
    assert f"{5 - first.epsilon:.3f} of 5 left" in shown.output
