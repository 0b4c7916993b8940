"""Compile contracts/ into marketplace/chain/artifacts/ (run by `make build`)."""

from marketplace.dev.compiler import PROJECT_ROOT, compile_sources, read_sources, write_artifacts


def main() -> None:
    contracts = compile_sources(read_sources(PROJECT_ROOT / "contracts"))
    for path in write_artifacts(contracts):
        size = (len(contracts[path.stem]["deployedBytecode"]) - 2) // 2
        print(f"wrote {path.relative_to(PROJECT_ROOT)} (runtime {size:,} bytes)")


if __name__ == "__main__":
    main()
