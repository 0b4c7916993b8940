"""How a secure aggregation round's update values become Paillier plaintexts and back:
clipped, quantized to fixed point and packed `slots` to a plaintext so that the sum of up to
`max_miners` updates never carries between slots (`marketplace.wire.secagg` has the scheme).
Its `SecAggError` is every secure aggregation module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

KEY_BITS = 2048  # n's size: 112-bit security, as for RSA-2048


class SecAggError(ValueError):
    """An aggregation that cannot be right: the wrong miners, sizes or parameters."""


@dataclass(frozen=True)
class Packing:
    """How update values become Paillier plaintexts, and back."""

    clip: float  # every value is clipped to [-clip, clip] first (bounds each miner's influence)
    fraction_bits: int  # fixed point: steps of 2**-fraction_bits
    max_miners: int  # headroom: a sum of up to this many updates never overflows a slot
    key_bits: int = KEY_BITS

    def __post_init__(self) -> None:
        if not (self.clip > 0 and 0 <= self.fraction_bits <= 40 and self.max_miners >= 1):
            raise SecAggError(f"bad packing parameters: {self}")
        if self.slots < 1:
            raise SecAggError(f"a {self.slot_bits}-bit slot does not fit a {self.key_bits}-bit key")

    @property
    def level(self) -> int:
        """The largest quantized magnitude, and the offset that makes every slot non-negative."""
        return int(round(self.clip * 2.0**self.fraction_bits))

    @property
    def slot_bits(self) -> int:
        return (2 * self.level * self.max_miners).bit_length()

    @property
    def slots(self) -> int:
        """Values per plaintext. n has key_bits bits, so n > 2**(key_bits - 1) > every packed
        integer of (key_bits - 1) bits: packed plaintexts and their sums stay below n."""
        return (self.key_bits - 1) // self.slot_bits

    def plaintexts(self, count: int) -> int:
        """How many plaintexts `count` values take."""
        return -(-count // self.slots)

    def quantize(self, values: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        clipped = np.clip(np.asarray(values, dtype=np.float64), -self.clip, self.clip)
        quantized = np.rint(clipped * 2.0**self.fraction_bits).astype(np.int64)
        return np.clip(quantized, -self.level, self.level) + self.level

    def pack(self, quantized: npt.NDArray[np.int64]) -> list[int]:
        """Slot j of plaintext k holds value k * slots + j (the last plaintext padded with 0)."""
        if quantized.size and (quantized.min() < 0 or quantized.max() > 2 * self.level):
            raise SecAggError("pack takes quantized values, in [0, 2 * level]")
        width, per = self.slot_bits, self.slots
        values = [int(v) for v in quantized.ravel()]
        packed = []
        for start in range(0, len(values), per):
            plaintext = 0
            for value in reversed(values[start : start + per]):
                plaintext = (plaintext << width) | value
            packed.append(plaintext)
        return packed

    def slot_values(self, plaintexts: Sequence[int], count: int) -> npt.NDArray[np.int64]:
        """The raw integers in the slots of `plaintexts` (the padding too), unchecked."""
        if len(plaintexts) != self.plaintexts(count):
            raise SecAggError(f"{len(plaintexts)} plaintexts for {count} values")
        width, mask = self.slot_bits, (1 << self.slot_bits) - 1
        out = np.empty(len(plaintexts) * self.slots, dtype=np.int64)
        i = 0
        for plaintext in plaintexts:
            for _ in range(self.slots):
                out[i] = plaintext & mask
                plaintext >>= width
                i += 1
        return out

    def unpack(self, plaintexts: Sequence[int], count: int, summed: int) -> npt.NDArray[np.int64]:
        """The `count` slot values of a sum of `summed` packed updates, offsets removed:
        the sum of the quantized values, as signed integers.

        Honest updates sum to [0, 2 * level * summed] in every slot, 0 in the padding and
        nothing above the last slot; a masked sum that did not cancel (a copied, stale or forged
        submission) is uniform mod n and fails that with overwhelming probability: refused."""
        if not 1 <= summed <= self.max_miners:
            raise SecAggError(f"a sum of {summed} updates; the slots hold up to {self.max_miners}")
        out = self.slot_values(plaintexts, count)
        top = self.slots * self.slot_bits
        in_range = not out.size or (
            int(out[:count].max()) <= 2 * self.level * summed and not out[count:].any()
        )
        if not in_range or any(p >> top for p in plaintexts):
            raise SecAggError(_NOT_A_SUM)
        return out[:count] - summed * self.level

    def dequantize(self, summed_values: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return summed_values.astype(np.float64) / 2.0**self.fraction_bits


_NOT_A_SUM = (
    "the decrypted sum is out of range: some submission was not masked for this round's miners "
    "(copied, stale or forged), so the masks did not cancel"
)
