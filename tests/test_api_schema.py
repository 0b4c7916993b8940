"""schemathesis against the API's own OpenAPI spec: generated requests (valid and invalid)
to every endpoint of an index with a settled task get no server error and no answer that
breaks the spec (status code, content type, body schema)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from marketplace.dev.devchain import now
from marketplace.service.api import create_app
from marketplace.service.indexer import Indexer
from tests.market import new_market

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
"""Not `positive_data_acceptance`: a well-formed id of a task that does not exist is a 404."""


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.Schema:
    folder: Path = tmp_path_factory.mktemp("schema")
    market = new_market(folder)
    market.run_to_claims(miners=2, claimants=1)
    index = Indexer(market.chain, folder / "index.sqlite", confirmations=0, store=market.store)
    index.sync()
    index.close()
    w3 = market.w3
    app = create_app(folder / "index.sqlite", lambda: (int(w3.eth.block_number), now(w3)))
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)


def test_no_server_error_and_no_schema_violation(api_schema: schemathesis.Schema) -> None:
    # schemathesis's pytest plugin does not run under pytest 9 (it reads a removed private
    # attribute): each operation's Hypothesis strategy is driven here instead.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        call()
