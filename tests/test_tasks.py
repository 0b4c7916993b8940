"""The task's off-chain protocol: spec validation, the sealed validation set, readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.errors import EnvelopeError, IntegrityError
from marketplace.protocol.tasks import account_key, open_validation, read_spec, seal_validation
from marketplace.rules.messages import DataSchema, Metric, TaskSpec
from tests.market import SPLIT, Market, new_market


def test_a_spec_whose_metric_does_not_fit_its_labels_is_refused() -> None:
    with pytest.raises(ValueError, match="needs data.num_classes"):
        TaskSpec(name="t", metric=Metric.ACCURACY, data=DataSchema(num_features=3), split=SPLIT)
    with pytest.raises(ValueError, match="regression"):
        TaskSpec(
            name="t",
            metric=Metric.NEGATED_SSE,
            data=DataSchema(num_features=3, num_classes=2),
            split=SPLIT,
        )


@pytest.fixture
def market(tmp_path: Path) -> Market:
    m = new_market(tmp_path, shards=2)
    m.create(rounds=1)
    return m


def test_the_evaluator_and_the_sponsor_open_the_sealed_validation_set(market: Market) -> None:
    spec = read_spec(market.chain, market.store, market.task_id)
    for reader in (market.evaluator_account, market.sponsor):
        file, salt = open_validation(
            market.chain, market.store, spec, market.task_id, account_key(reader), market.chain_id
        )
        assert file.startswith(b"label,x0,x1") and len(salt) == 32
    with pytest.raises(EnvelopeError, match="not a recipient|recipient"):
        open_validation(
            market.chain,
            market.store,
            spec,
            market.task_id,
            account_key(market.keys[5]),
            market.chain_id,
        )


def test_a_sealed_file_that_is_not_the_committed_one_is_refused(market: Market) -> None:
    spec = read_spec(market.chain, market.store, market.task_id)
    evaluator = account_key(market.evaluator_account)
    forged = seal_validation(
        b"label,x0\n1,2\n", bytes(32), [evaluator.public_bytes], market.sponsor, market.chain_id
    )
    swapped = spec.model_copy(update={"validation_cid": market.store.put(forged)})

    with pytest.raises(IntegrityError, match="not the committed one"):
        open_validation(
            market.chain, market.store, swapped, market.task_id, evaluator, market.chain_id
        )
