"""Write tests/data/cid_vectors.json: CIDs a real IPFS implementation gives known bytes.

The vectors are the oracle for `marketplace.wire.cid.cid_of`; they were produced with
js-ipfs 0.66.1, installed outside the project and run offline on a fresh empty repo:

    mkdir -p /tmp/ipfs-oracle && cd /tmp/ipfs-oracle && npm init -y
    npm pkg set overrides.mortice=3.1.0 && npm install ipfs@0.66.1
    IPFS_PATH=/tmp/ipfs-oracle/repo npx jsipfs init --empty-repo
    cd /work/main && .venv/bin/python scripts/make_cid_vectors.py --repo /tmp/ipfs-oracle/repo \\
        --ipfs "unshare -n /tmp/ipfs-oracle/node_modules/.bin/jsipfs" --extra=--preload=false

Without a daemon, `jsipfs add` opens the repo in-process and never starts libp2p; `unshare -n`
(an empty network namespace) makes sure of it. Kubo's `ipfs` takes the same `add` flags
(`--ipfs ipfs --implementation "kubo X.Y"`, no `--extra`).
Each payload is `payload(size)` below: SHAKE-256 of a label naming the size, so the test
regenerates the exact bytes (and checks their sha256) without storing 60 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
CHUNK = 262_144
ADD_FLAGS = [
    "add",
    "--cid-version",
    "1",
    "--raw-leaves",
    "--chunker",
    f"size-{CHUNK}",
    "--cid-base",
    "base32",  # jsipfs prints CIDv1 in base58btc unless told; Kubo takes the flag too
    "-Q",
]
FIXED_SIZES = [
    0,
    1,
    100,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    2 * CHUNK,
    MIB,
    174 * CHUNK,  # the last size a single dag-pb node holds
    174 * CHUNK + 1,  # the first that needs a second level
    10 * MIB,
    50 * MIB,
]
RANDOM_SEED = 20240601
PAYLOAD = "hashlib.shake_256(b'gradient-marketplace cid vector ' + str(size).encode()).digest(size)"
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "cid_vectors.json"


def payload(size: int) -> bytes:
    """The bytes hashed for a vector of `size` bytes (also written as PAYLOAD in the JSON)."""
    return hashlib.shake_256(b"gradient-marketplace cid vector " + str(size).encode()).digest(size)


def random_sizes() -> list[int]:
    """Three sizes drawn with a fixed seed: under one chunk, a few MiB, past 174 chunks."""
    rng = random.Random(RANDOM_SEED)
    return [
        rng.randrange(2, CHUNK),
        rng.randrange(2 * MIB, 10 * MIB),
        rng.randrange(174 * CHUNK + 2, 50 * MIB),
    ]


def ipfs_add(ipfs: list[str], extra: list[str], env: dict[str, str], data: bytes) -> str:
    with tempfile.NamedTemporaryFile(prefix="cid-vector-") as f:
        f.write(data)
        f.flush()
        out = subprocess.run(
            [*ipfs, *ADD_FLAGS, *extra, f.name], env=env, check=True, capture_output=True, text=True
        )
    return out.stdout.strip().splitlines()[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipfs", required=True, help="the ipfs/jsipfs command (space-split)")
    parser.add_argument("--extra", default="", help="more `add` flags (space-split)")
    parser.add_argument("--repo", help="IPFS_PATH for the command (an initialised repo)")
    parser.add_argument("--implementation", default="js-ipfs 0.66.1 (jsipfs CLI, offline)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    env = dict(os.environ)
    if args.repo:
        env["IPFS_PATH"] = args.repo
    ipfs = args.ipfs.split()
    sizes = FIXED_SIZES + random_sizes()
    vectors = []
    for size in sizes:
        data = payload(size)
        cid = ipfs_add(ipfs, args.extra.split(), env, data)
        vectors.append({"size": size, "sha256": hashlib.sha256(data).hexdigest(), "cid": cid})
        print(f"{size:>10} {cid}")
    document = {
        "description": (
            "CIDs returned by a real IPFS implementation for deterministic payloads, added "
            "with CIDv1, raw leaves, 256 KiB fixed-size chunks and the default balanced layout."
        ),
        "implementation": args.implementation,
        "command": " ".join([args.ipfs, *ADD_FLAGS, args.extra, "FILE"]),
        "generated_by": "scripts/make_cid_vectors.py",
        "payload": PAYLOAD,
        "random_sizes_seed": RANDOM_SEED,
        "vectors": vectors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {args.out}")


if __name__ == "__main__":
    main()
