"""Throughput of the off-chain core next to baselines measured in the same run.

- LocalStore put/get of a 10 MiB blob vs a plain file write/read of the same bytes;
- envelope seal/open of 10 MiB (one recipient) vs plain AES-256-GCM encrypt/decrypt;
- `score` in validation rows/s for a small MLP vs a bare torch forward pass over the same rows.

Each figure is the best of several repetitions (the least disturbed by the machine's other
work). Run: `.venv/bin/python scripts/bench_core.py`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1024 * 1024
SIZE = 10 * MIB


def best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of `repeats` runs of `fn`, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def line(name: str, seconds: float, baseline_name: str, baseline: float, unit: float) -> None:
    rate, base_rate = unit / seconds, unit / baseline
    print(
        f"{name:<28} {rate:>10,.1f}   {baseline_name:<26} {base_rate:>10,.1f}   "
        f"ratio {rate / base_rate:5.2f}"
    )


def bench_storage(data: bytes) -> None:
    from marketplace.storage.stores import LocalStore

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        plain = root / "plain.bin"

        def plain_write() -> None:
            with open(plain, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

        counter = iter(range(10**6))

        def store_put() -> None:  # a fresh store each time: put of existing bytes is a no-op
            LocalStore(root / f"store{next(counter)}").put(data)

        store = LocalStore(root / "reader")
        cid = store.put(data)
        line(
            "LocalStore.put MB/s",
            best_of(store_put),
            "file write+fsync MB/s",
            best_of(plain_write),
            SIZE / MIB,
        )
        line(
            "LocalStore.get MB/s",
            best_of(lambda: store.get(cid, SIZE)),
            "file read MB/s",
            best_of(plain.read_bytes),
            SIZE / MIB,
        )


def bench_envelope(data: bytes) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from eth_account import Account

    from marketplace.wire.envelope import open_envelope, seal
    from marketplace.wire.keys import X25519KeyPair

    author = Account.create()
    reader = X25519KeyPair.generate()
    binding = {"task_id": 1, "parent": 1, "kind": "update"}
    blob = seal(data, [reader.public_bytes], author.key, **binding)
    aes, nonce = AESGCM(AESGCM.generate_key(256)), os.urandom(12)
    ciphertext = aes.encrypt(nonce, data, None)
    line(
        "seal MB/s",
        best_of(lambda: seal(data, [reader.public_bytes], author.key, **binding)),
        "AES-256-GCM encrypt MB/s",
        best_of(lambda: aes.encrypt(nonce, data, None)),
        SIZE / MIB,
    )
    opened = best_of(
        lambda: open_envelope(
            blob, reader.private_key, expected_author=author.address, max_size=2 * SIZE, **binding
        )
    )
    line(
        "open_envelope MB/s",
        opened,
        "AES-256-GCM decrypt MB/s",
        best_of(lambda: aes.decrypt(nonce, ciphertext, None)),
        SIZE / MIB,
    )


def bench_score() -> None:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from marketplace.rules.datafiles import Dataset
    from marketplace.rules.evaluation import score
    from marketplace.rules.messages import Metric
    from marketplace.rules.models import ModelSpec, build_model, init_weights

    digits = load_digits()
    features = np.ascontiguousarray(digits.data, dtype=np.float32)  # 1,797 rows x 64 features
    dataset = Dataset(features, digits.target.astype(np.int64), num_classes=10)
    spec = ModelSpec.from_json(
        b'{"input_shape": [64], "layers": [{"type": "linear", "in_features": 64, '
        b'"out_features": 128}, {"type": "relu"}, {"type": "linear", "in_features": 128, '
        b'"out_features": 10}]}'
    )
    weights = init_weights(spec, seed=0)
    model = build_model(spec, weights).train(False)
    inputs = torch.from_numpy(features)

    def bare_forward() -> None:
        with torch.no_grad():
            model(inputs).argmax(dim=1)

    score(spec, weights, dataset, Metric.ACCURACY)  # warm up (deterministic mode's first import)
    line(
        "score rows/s (64-128-10 MLP)",
        best_of(lambda: score(spec, weights, dataset, Metric.ACCURACY)),
        "bare torch forward rows/s",
        best_of(bare_forward),
        len(dataset),
    )


def main() -> None:
    data = os.urandom(SIZE)
    print(f"{'measured':<28} {'rate':>10}   {'baseline (same run)':<26} {'rate':>10}")
    bench_storage(data)
    bench_envelope(data)
    bench_score()


if __name__ == "__main__":
    main()
