"""Secure aggregation: packing with headroom, masks that cancel, an exact decrypted sum, and a
single submission that decrypts to noise."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import gmpy2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier
from scipy import stats

from marketplace.wire.secagg import (
    aggregate,
    decrypt,
    derive_key,
    encrypt,
    generate_key,
    open_sum,
    seal_update,
    sum_round,
)
from marketplace.wire.secagg_masks import (
    MaskedRound,
    mask_key,
    mask_stream,
    masks,
    self_mask_key,
    uncancelled_masks,
)
from marketplace.wire.secagg_packing import Packing, SecAggError
from marketplace.wire.secagg_submission import decode_submission, encode_submission
from tests.programs import script_output

PACKING = Packing(clip=1.0, fraction_bits=12, max_miners=8, key_bits=1024)
CONTEXT = b"chain 31337 / contract 0xabc / task 1 / round 0"
Keys = tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey]


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    yield generate_key(1024)  # 2048 in use; 1024 keeps the tests quick, the code is the same


def miners(count: int, context: bytes = CONTEXT) -> tuple[list[X25519PrivateKey], MaskedRound]:
    # Fixed keys: the statistical tests below then pass or fail the same way every run (with
    # fresh keys, a test at p > 1e-3 failed one run in a thousand).
    secrets = [
        X25519PrivateKey.from_private_bytes(hashlib.sha256(context + bytes([i])).digest())
        for i in range(count)
    ]
    return secrets, MaskedRound(context, {i: k.public_key() for i, k in enumerate(secrets)})


def updates(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.4, size) for _ in range(count)]


def test_the_packing_parameters_follow_from_clip_precision_and_headroom() -> None:
    assert (PACKING.level, PACKING.slot_bits, PACKING.slots) == (4096, 17, 60)
    assert Packing(clip=1.0, fraction_bits=16, max_miners=10).slots == 97  # 2048-bit key
    with pytest.raises(SecAggError, match="does not fit"):
        Packing(clip=1.0, fraction_bits=40, max_miners=2**40, key_bits=64)


def test_values_are_clipped_then_rounded_to_fixed_point() -> None:
    packing = Packing(clip=1.0, fraction_bits=2, max_miners=1, key_bits=64)
    quantized = packing.quantize(np.array([-7.0, -1.0, -0.3, 0.0, 0.124, 0.126, 0.9, 3.0]))
    assert quantized.tolist() == [0, 0, 3, 4, 4, 5, 8, 8]  # level 4: -1 -> 0, 0 -> 4, 1 -> 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2 * PACKING.level), max_size=3 * PACKING.slots + 5))
def test_pack_then_unpack_gives_the_values_back(values: list[int]) -> None:
    quantized = np.array(values, dtype=np.int64)
    packed = PACKING.pack(quantized)
    assert len(packed) == PACKING.plaintexts(len(values))
    assert all(0 <= p < 2 ** (PACKING.key_bits - 1) for p in packed)
    back = PACKING.unpack(packed, len(values), summed=1)
    assert back.tolist() == [v - PACKING.level for v in values]


def test_a_sum_of_max_miners_extreme_updates_overflows_no_slot() -> None:
    count = 2 * PACKING.slots + 3
    for extreme in (0, 2 * PACKING.level):  # every miner at -clip, then every one at +clip
        packed = PACKING.pack(np.full(count, extreme, dtype=np.int64))
        summed = [p * PACKING.max_miners for p in packed]
        assert all(s < 2 ** (PACKING.key_bits - 1) for s in summed)
        expected = PACKING.max_miners * (extreme - PACKING.level)
        assert PACKING.unpack(summed, count, PACKING.max_miners).tolist() == [expected] * count
    with pytest.raises(SecAggError, match="hold up to 8"):
        PACKING.unpack(summed, count, PACKING.max_miners + 1)


def test_pairwise_masks_cancel_in_the_sum_and_only_for_their_round(keys: Keys) -> None:
    n = keys[0].n
    secrets, masked = miners(4)
    streams = [masks(k, i, masked.keys, CONTEXT, 5, n) for i, k in enumerate(secrets)]
    assert [sum(column) % n for column in zip(*streams, strict=True)] == [0] * 5
    assert all(value != 0 for stream in streams for value in stream)
    other = masks(secrets[0], 0, masked.keys, CONTEXT + b"!", 5, n)
    assert other != streams[0]  # another round or task: other masks


def test_the_decrypted_sum_equals_the_sum_of_the_quantized_updates_exactly(keys: Keys) -> None:
    public, private = keys
    size, count = 1000, 5
    secrets, masked = miners(count)
    values = updates(count, size)
    sealed = {
        i: seal_update(values[i], PACKING, public, secrets[i], i, masked) for i in range(count)
    }
    assert all(len(c) == PACKING.plaintexts(size) for c in sealed.values())
    encrypted_sum = sum_round(public, masked, sealed)
    summed = PACKING.unpack(decrypt(private, encrypted_sum), size, count)
    exact = sum(PACKING.quantize(v) - PACKING.level for v in values)
    assert summed.tolist() == exact.tolist()
    approximate = open_sum(private, PACKING, encrypted_sum, size, count)
    true_sum = sum(np.clip(v, -1, 1) for v in values)
    assert np.max(np.abs(approximate - true_sum)) <= count * 2.0 ** -(PACKING.fraction_bits + 1)


def test_one_submission_decrypts_to_values_indistinguishable_from_random(keys: Keys) -> None:
    public, private = keys
    size = 3000
    secrets, masked = miners(3)
    values = updates(3, size, seed=1)
    truth = PACKING.quantize(values[0])
    sealed = seal_update(values[0], PACKING, public, secrets[0], 0, masked)
    slots = PACKING.slot_values(decrypt(private, sealed), size)[:size]
    # Uniform over the whole slot, uncorrelated with the update.
    span = 2**PACKING.slot_bits
    assert stats.kstest(slots / span, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(slots, truth)[0, 1]) < 0.1
    # The control: with no peers there is no mask, and the same steps give the update back.
    alone = MaskedRound(CONTEXT, {0: secrets[0].public_key()})
    plain = seal_update(values[0], PACKING, public, secrets[0], 0, alone)
    assert (PACKING.unpack(decrypt(private, plain), size, 1) + PACKING.level).tolist() == (
        truth.tolist()
    )


def test_a_miner_that_drops_out_after_the_masks_were_agreed_abandons_the_round(
    keys: Keys,
) -> None:
    public, private = keys
    size = 200
    secrets, masked = miners(4)
    values = updates(4, size, seed=2)
    sealed = {i: seal_update(values[i], PACKING, public, secrets[i], i, masked) for i in (0, 1, 3)}
    with pytest.raises(SecAggError, match=r"miners \[2\] dropped out"):
        sum_round(public, masked, sealed)
    # Why it is refused: without miner 2 the masks do not cancel, and the "sum" is noise.
    noise = decrypt(private, aggregate(public, list(sealed.values())))
    forced = PACKING.slot_values(noise, size)[:size] - 3 * PACKING.level
    exact = sum(PACKING.quantize(values[i]) - PACKING.level for i in (0, 1, 3))
    assert np.mean(forced == exact) < 0.01
    # ... and opening it anyway is refused: the slots are out of any sum's range.
    with pytest.raises(SecAggError, match="out of range"):
        PACKING.unpack(noise, size, 3)
    # The re-run: fresh keys among the three who stayed, and the sum is exact again.
    fresh = [X25519PrivateKey.generate() for _ in range(3)]
    rerun = MaskedRound(
        CONTEXT + b" rerun 1", {i: fresh[j].public_key() for j, i in enumerate((0, 1, 3))}
    )
    resealed = {
        i: seal_update(values[i], PACKING, public, fresh[j], i, rerun)
        for j, i in enumerate((0, 1, 3))
    }
    summed = PACKING.unpack(decrypt(private, sum_round(public, rerun, resealed)), size, 3)
    assert summed.tolist() == exact.tolist()


def test_the_survivors_seeds_with_a_drop_out_open_the_exact_sum_of_the_rest(
    keys: Keys,
) -> None:
    public, private = keys
    size = 300
    secrets, masked = miners(4)
    values = updates(4, size, seed=3)
    survivors = (0, 1, 3)
    exact = sum(PACKING.quantize(values[i]) - PACKING.level for i in survivors)
    own = {i: self_mask_key(secrets[i], CONTEXT) for i in range(4)}
    sealed = {
        i: seal_update(values[i], PACKING, public, secrets[i], i, masked, own[i]) for i in survivors
    }
    encrypted = sum_round(public, masked, sealed, dropped=[2])
    seeds = {i: [own[i], mask_key(secrets[i], masked.keys[2], CONTEXT)] for i in survivors}
    correction = uncancelled_masks(seeds, [2], len(encrypted), public.n)
    opened = open_sum(private, PACKING, encrypted, size, 3, correction)
    assert opened.tolist() == PACKING.dequantize(exact).tolist()
    # One survivor's seed wrong (or missing): the masks do not cancel, and nothing opens.
    wrong = uncancelled_masks({**seeds, 1: [own[1], bytes(32)]}, [2], len(encrypted), public.n)
    with pytest.raises(SecAggError, match="out of range"):
        open_sum(private, PACKING, encrypted, size, 3, wrong)
    with pytest.raises(SecAggError, match="gave 1 seeds; a self mask and 1 drop-outs take 2"):
        uncancelled_masks({0: [own[0]]}, [2], 1, public.n)
    # The drop-out's submission surfaces late: every pairwise key it has is revealed, and its
    # own mask still hides it (the same steps without the self mask give the update back).
    late = seal_update(values[2], PACKING, public, secrets[2], 2, masked, own[2])
    pairs = {2: [bytes(32)] + [mask_key(secrets[2], masked.keys[i], CONTEXT) for i in survivors]}
    unmasked = uncancelled_masks(pairs, list(survivors), len(late), public.n)
    plain = [(p - c) % public.n for p, c in zip(decrypt(private, late), unmasked, strict=True)]
    truth = PACKING.quantize(values[2])
    assert np.mean(PACKING.slot_values(plain, size)[:size] == truth) < 0.01
    guess = mask_stream(bytes(32), len(late), public.n)  # the self mask slot, filled with 0s
    pairwise = [(u - g) % public.n for u, g in zip(unmasked, guess, strict=True)]
    bare = seal_update(values[2], PACKING, public, secrets[2], 2, masked)
    plain = [(p - c) % public.n for p, c in zip(decrypt(private, bare), pairwise, strict=True)]
    assert PACKING.slot_values(plain, size)[:size].tolist() == truth.tolist()


def test_bad_rounds_and_inputs_are_refused(keys: Keys) -> None:
    public, _ = keys
    secrets, masked = miners(2)
    value = updates(1, 100)[0]  # two plaintexts
    one = seal_update(value, PACKING, public, secrets[0], 0, masked)
    two = seal_update(value, PACKING, public, secrets[1], 1, masked)
    with pytest.raises(SecAggError, match=r"miners \[5\], who agreed no masks"):
        sum_round(public, masked, {0: one, 1: two, 5: two})
    with pytest.raises(SecAggError, match="different lengths"):
        aggregate(public, [one, two[:-1]])
    with pytest.raises(SecAggError, match="nothing to aggregate"):
        aggregate(public, [])
    with pytest.raises(SecAggError, match="agreed no masks"):
        seal_update(value, PACKING, public, secrets[0], 7, masked)
    crowd_secrets, crowd = miners(PACKING.max_miners + 1)
    with pytest.raises(SecAggError, match="9 miners; the slots hold sums of 8"):
        seal_update(value, PACKING, public, crowd_secrets[0], 0, crowd)
    with pytest.raises(SecAggError, match="outside"):
        encrypt(public, [public.n])
    with pytest.raises(SecAggError, match="quantized values"):
        PACKING.pack(np.array([-1]))


def test_the_paillier_benchmark_checks_its_sum_and_reports_the_speedup() -> None:
    output = script_output("bench_paillier.py", "--sizes", "500", "--sample", "20")
    assert "21-bit slots, 97 a plaintext" in output
    assert "500 values, 6 packed plaintexts:" in output
    last = output.strip().splitlines()[-1]
    match = re.fullmatch(r"PAILLIER packed_speedup=([0-9.]+) encrypt_100k_s=([0-9.]+)", last)
    assert match, last
    assert float(match[1]) > 10 and float(match[2]) > 0  # 500 values: 6 plaintexts, not 500


def test_a_submission_goes_over_the_wire_and_back(keys: Keys) -> None:
    public, private = keys
    size = 150
    secrets, masked = miners(2)
    values = updates(2, size, seed=3)
    sealed = [seal_update(values[i], PACKING, public, secrets[i], i, masked) for i in range(2)]
    blobs = [encode_submission(c, public, PACKING, masked, size) for c in sealed]
    width = 2 * 1024 // 8
    assert len(blobs[0]) == 76 + PACKING.plaintexts(size) * width == 76 + 3 * 256
    assert blobs[0][:5] == b"GMSA\x01"
    back = {i: decode_submission(b, public, PACKING, masked, size) for i, b in enumerate(blobs)}
    assert back == dict(enumerate(sealed))
    summed = PACKING.unpack(decrypt(private, sum_round(public, masked, back)), size, 2)
    assert summed.tolist() == sum(PACKING.quantize(v) - PACKING.level for v in values).tolist()


def test_a_submission_that_is_not_for_this_round_is_refused_before_use(keys: Keys) -> None:
    public, _ = keys
    size = 150
    secrets, masked = miners(2)
    sealed = seal_update(updates(1, size)[0], PACKING, public, secrets[0], 0, masked)
    blob = encode_submission(sealed, public, PACKING, masked, size)

    def refused(data: bytes, match: str, **round_: object) -> None:
        args = {"public": public, "packing": PACKING, "masked": masked, "values": size} | round_
        with pytest.raises(SecAggError, match=match):
            decode_submission(data, **args)  # type: ignore[arg-type]

    refused(blob + b"\0", "845 bytes; a submission of 150 values has 844")
    refused(blob[:-1], "843 bytes")
    refused(blob, "bytes; a submission of 10 values", values=10)
    refused(b"XXXX" + blob[4:], "not a version 1 aggregate submission")
    refused(blob, "another Paillier key", public=generate_key(1024)[0])
    refused(blob, "another round", masked=MaskedRound(b"another round", masked.keys))
    wider = Packing(clip=1.0, fraction_bits=11, max_miners=8, key_bits=1024)  # 16-bit slots
    assert wider.plaintexts(size) == PACKING.plaintexts(size)  # the same length, other slots
    refused(blob, "17-bit slots, 60 a plaintext; the round packs 150, 16-bit, 63", packing=wider)
    width = 256
    for bad in (0, public.nsquare, public.n):  # zero, too large, not a unit
        forged = blob[:76] + bad.to_bytes(width, "big") + blob[76 + width :]
        refused(forged, "ciphertext 0 is not a unit mod n")
    with pytest.raises(SecAggError, match="2 ciphertexts for 150 values"):
        encode_submission(sealed[:2], public, PACKING, masked, size)


def test_an_evaluators_paillier_key_is_rebuilt_from_its_ethereum_key() -> None:
    key = bytes(range(32))
    public, private = derive_key(key)
    again, _ = derive_key(key)
    other, _ = derive_key(bytes(range(1, 33)))
    assert public.n == again.n != other.n
    assert public.n.bit_length() == 2048
    for prime in (private.p, private.q):
        assert prime.bit_length() == 1024 and gmpy2.is_prime(prime, 50)
    assert private.p * private.q == public.n and private.p != private.q
    assert decrypt(private, encrypt(public, [0, 1, public.n - 1])) == [0, 1, public.n - 1]
    with pytest.raises(ValueError, match="32 bytes, not 31"):
        derive_key(key[:31])
