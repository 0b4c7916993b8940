"""Write marketplace/chain/reverts.py from the contract's ABI (run by `make build`, after the
artifacts; tests/test_error_coverage.py fails when the committed file is stale)."""

from marketplace.dev.compiler import PROJECT_ROOT
from marketplace.dev.revertgen import OUTPUT, current


def main() -> None:
    OUTPUT.write_text(current())
    print(f"wrote {OUTPUT.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
