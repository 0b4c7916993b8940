#!/usr/bin/env bash
# anvil and an IPFS node in the background for the market on real engines, bound to 127.0.0.1,
# their data, logs and PID files in .engines/ (`marketplace engines --help` for the options):
#   scripts/engines.sh start    # start both, deploy the marketplace, write .market/devnet.json
#   scripts/engines.sh status   # exit 0 when both answer
#   scripts/engines.sh stop     # stop exactly the processes start began
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in
  start | stop | status) ;;
  *) echo "usage: scripts/engines.sh start|stop|status [options]" >&2; exit 2 ;;
esac
[ "$1" = start ] && scripts/setup.sh >/dev/null
exec .venv/bin/marketplace engines "$@"
