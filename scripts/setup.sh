#!/usr/bin/env bash
# One idempotent set-up for a fresh machine: a Python 3.11 venv with every dependency pinned
# (requirements.lock, torch's CPU build included), the project installed editable, and the npm
# tools (solcjs, OpenZeppelin, anvil, forge, js-ipfs) from package-lock.json, and Chromium and wrk from
# Debian. Re-running skips what is current.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stamps=.stamps
mkdir -p "$stamps"

# pip's extra-index directories on these machines print a warning per package; hide that noise.
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

if [ ! -x .venv/bin/python ]; then
  python=$(command -v python3.11 || command -v python3)
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "setup: Python 3.11 is required (found $("$python" --version))" >&2; exit 1; }
  "$python" -m venv .venv
fi

if [ ! -f "$stamps/python" ] || [ requirements.lock -nt "$stamps/python" ] || [ pyproject.toml -nt "$stamps/python" ]; then
  echo "setup: installing pinned Python dependencies (about 2 minutes on a fresh machine)"
  set -o pipefail
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 | quiet_pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 | quiet_pip
  touch "$stamps/python"
fi

if [ ! -f "$stamps/npm" ] || [ package-lock.json -nt "$stamps/npm" ] || [ ! -d node_modules ]; then
  command -v npm >/dev/null || { echo "setup: npm (Node 20) is required" >&2; exit 1; }
  echo "setup: installing pinned npm tools (solcjs, OpenZeppelin, anvil, forge, js-ipfs; about 3 minutes)"
  # `npm ci` rejects this lock (npm 11 wants every platform's optional anvil binary listed);
  # `npm install` follows the same lock and pins.
  npm install --no-audit --no-fund --loglevel=error
  touch "$stamps/npm"
fi
# Debian's Chromium and ChromeDriver for the dashboard's browser test (never a downloaded
# browser), and wrk for the API load test. About 15 s when the package lists are current.
debian_packages=(chromium chromium-driver wrk)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { "${as_root[@]}" apt-get update -q >/dev/null \
         && "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
    || { echo "setup: could not install ${missing[*]} with apt-get" >&2; exit 1; }
fi
echo "setup: ready"
