"""Gas is a product metric: every operation within its target, the README's table current."""

from __future__ import annotations

from marketplace.compiler import PROJECT_ROOT
from marketplace.gasreport import (
    TARGETS,
    markdown_table,
    measure,
    over_target,
    parse_markdown_table,
)


def test_every_operation_is_within_target_and_the_readme_table_is_current() -> None:
    gas = measure()

    assert set(gas) == set(TARGETS)
    assert over_target(gas) == {}
    # O(1) settlement: posting a root costs the same for 10 and for 1,000 nodes, up to the
    # calldata bytes of the two different totals.
    assert abs(gas["postPayoutRoot (10 nodes)"] - gas["postPayoutRoot (1,000 nodes)"]) < 200
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("<!-- gas-table:start -->")[1].split("<!-- gas-table:end -->")[0]
    assert parse_markdown_table(table) == gas, (
        "README gas table is stale; paste `scripts/gas.py --markdown`:\n" + markdown_table(gas)
    )
