"""Print the exact gas of every marketplace operation (`make gas`).

JSON by default (one key per operation); `--markdown` prints the README's gas table instead.
Exits non-zero if an operation is over its target.
"""

import json
import sys

from marketplace.gasreport import TARGETS, markdown_table, measure, over_target


def main() -> int:
    gas = measure(progress=lambda step: print(f"measuring: {step}", file=sys.stderr))
    print(markdown_table(gas) if "--markdown" in sys.argv[1:] else json.dumps(gas, indent=2))
    over = over_target(gas)
    for name, (used, target) in over.items():
        print(f"OVER TARGET: {name}: {used:,} > {target:,}", file=sys.stderr)
    within = sum(1 for name in gas if TARGETS[name] is not None) - len(over)
    print(f"{within} operations within their targets, {len(over)} over", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
