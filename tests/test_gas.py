"""Gas is a product metric: every operation within its target, the same on eth-tester and on
anvil to the unit, the README's table current for both."""

from __future__ import annotations

import pytest

from marketplace.dev.compiler import PROJECT_ROOT
from marketplace.dev.gasreport import (
    TARGETS,
    engines_differ,
    markdown_table,
    measure,
    measure_on,
    over_target,
    parse_markdown_table,
)


def readme_table() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    return readme.split("<!-- gas-table:start -->")[1].split("<!-- gas-table:end -->")[0]


@pytest.fixture(scope="module")
def tester_gas() -> dict[str, int]:
    """eth-tester's figures, measured once for both tests."""
    return measure()


def test_every_operation_is_within_target_and_the_readme_table_is_current(
    tester_gas: dict[str, int],
) -> None:
    gas = tester_gas

    assert set(gas) == set(TARGETS)
    assert over_target(gas) == {}
    # O(1) settlement: posting a root costs the same for 10 and for 1,000 nodes, up to the
    # calldata bytes of the two different totals.
    assert abs(gas["postPayoutRoot (10 nodes)"] - gas["postPayoutRoot (1,000 nodes)"]) < 200
    assert parse_markdown_table(readme_table(), "tester") == gas, (
        "README gas table is stale; paste `scripts/gas.py --markdown --compare`:\n"
        + markdown_table({"tester": gas})
    )


@pytest.mark.engines
def test_anvil_measures_exactly_the_gas_of_eth_tester_and_the_readme_shows_it(
    tester_gas: dict[str, int],
) -> None:
    gas = measure_on("anvil")

    figures = {"tester": tester_gas, "anvil": gas}
    assert engines_differ(figures) == {}, "anvil's gas differs:\n" + markdown_table(figures)
    assert gas == tester_gas
    assert parse_markdown_table(readme_table(), "anvil") == gas, (
        "README gas table is stale; paste `scripts/gas.py --markdown --compare`:\n"
        + markdown_table(figures)
    )


def test_the_table_parses_back_per_engine_column() -> None:
    tester = {name: 1000 + i for i, name in enumerate(TARGETS)}
    anvil = {name: 2000 + i for i, name in enumerate(TARGETS)}
    both = markdown_table({"tester": tester, "anvil": anvil})

    assert parse_markdown_table("text before\n" + both + "\ntext after", "tester") == tester
    assert parse_markdown_table(both, "anvil") == anvil
    assert parse_markdown_table(markdown_table({"anvil": anvil}), "anvil") == anvil
    assert parse_markdown_table(markdown_table({"anvil": anvil}), "tester") == {}
    assert engines_differ({"tester": tester, "anvil": tester}) == {}
    first = next(iter(TARGETS))
    assert engines_differ({"tester": tester, "anvil": anvil})[first] == {
        "tester": 1000,
        "anvil": 2000,
    }
