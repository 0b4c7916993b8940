"""Print the exact gas of every marketplace operation (`make gas`).

JSON by default (one key per operation), measured on eth-tester; `--engine anvil` measures on
anvil instead; `--compare` measures on both (JSON: one object per engine). `--markdown` prints
the gas table instead: `--markdown --compare` is the README's, one column per engine.
Exits non-zero if an operation is over its target, or if the engines compared differ.
"""

import argparse
import json
import sys

from marketplace.dev.gasreport import (
    COLUMNS,
    ENGINES,
    TARGETS,
    engines_differ,
    markdown_table,
    measure_on,
    over_target,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, default="tester", help="default: tester")
    parser.add_argument("--compare", action="store_true", help="measure on every engine")
    parser.add_argument("--markdown", action="store_true", help="print the gas table")
    args = parser.parse_args()

    engines = ENGINES if args.compare else (args.engine,)
    figures = {
        engine: measure_on(
            engine, progress=lambda step, e=engine: print(f"{e}: {step}", file=sys.stderr)
        )
        for engine in engines
    }
    if args.markdown:
        print(markdown_table(figures))
    elif args.compare:
        print(json.dumps({COLUMNS[engine]: gas for engine, gas in figures.items()}, indent=2))
    else:
        print(json.dumps(figures[args.engine], indent=2))

    failed = False
    for engine, gas in figures.items():
        over = over_target(gas)
        for name, (used, target) in over.items():
            print(f"OVER TARGET on {engine}: {name}: {used:,} > {target:,}", file=sys.stderr)
        within = sum(1 for name in gas if TARGETS[name] is not None) - len(over)
        print(
            f"{engine}: {within} operations within their targets, {len(over)} over", file=sys.stderr
        )
        failed = failed or bool(over)
    differ = engines_differ(figures)
    for name, by_engine in differ.items():
        shown = ", ".join(f"{engine} {used:,}" for engine, used in by_engine.items())
        print(f"ENGINES DIFFER: {name}: {shown}", file=sys.stderr)
    if len(figures) > 1:
        print(f"{len(TARGETS) - len(differ)} operations the same on every engine", file=sys.stderr)
    return 1 if failed or differ else 0


if __name__ == "__main__":
    sys.exit(main())
