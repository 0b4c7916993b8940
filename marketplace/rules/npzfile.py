"""The `.npz` data file reader: arrays `x` and `y`, never unpickled, capped before allocation.

The archive's members must unpack to at most the cap, be exactly `x` (and `y` when the file is
labelled), and each `.npy` header (shape, dtype) must declare exactly the bytes its member
holds, no Python objects, before numpy allocates anything. Then the arrays are checked against
the task's `DataSchema` (width, token range, finite numbers, class range), and a problem names
the row and column, counted from 1. `marketplace.rules.datafiles` decides which files are
`.npz` and builds the `Dataset`.
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from marketplace.errors import DataFormatError
from marketplace.rules.messages import DataSchema

if TYPE_CHECKING:
    from marketplace.rules.datafiles import Features, Labels


def npz_arrays(
    data: bytes, max_size: int, labels_optional: bool = False
) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
    """The arrays 'x' and 'y' of an `.npz` data file ('y' None when `labels_optional` and
    absent), their sizes and headers checked against the cap before numpy allocates them,
    never unpickled."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            unpacked = sum(info.file_size for info in members)
            if unpacked > max_size:
                raise DataFormatError(
                    f"the .npz arrays unpack to {unpacked:,} bytes, over the cap of {max_size:,}"
                )
            names = sorted(info.filename.removesuffix(".npy") for info in members)
            if names != ["x", "y"] and not (labels_optional and names == ["x"]):
                expected = "'x', and 'y' if labelled" if labels_optional else "'x' and 'y'"
                raise DataFormatError(
                    f"a .npz data file holds exactly arrays {expected}, not {names}"
                )
            for info in members:
                _check_npy_header(archive, info, max_size)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return npz["x"], (npz["y"] if "y" in names else None)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise DataFormatError(f"not a valid .npz data file: {exc}") from None


def read_npz(
    data: bytes, schema: DataSchema, max_size: int, labels_optional: bool
) -> tuple[Features, Labels | None]:
    x, y = npz_arrays(data, max_size, labels_optional)
    rows = x.shape[0] if x.ndim else 0
    if x.ndim < 2 or math.prod(x.shape[1:]) != schema.num_features:
        raise DataFormatError(
            f"array 'x' has shape {x.shape}, expected (rows, {schema.num_features})"
        )
    if rows == 0:
        raise DataFormatError("the file has no data rows")
    if y is not None and y.shape != (rows,):
        raise DataFormatError(f"array 'y' has shape {y.shape}, expected ({rows},)")
    x = x.reshape(rows, schema.num_features)
    if schema.input == "tokens":
        if x.dtype.kind not in "iu":
            raise DataFormatError(f"array 'x' must hold integer token ids, not {x.dtype}")
        upper = schema.vocab_size or np.iinfo(np.int64).max
        _first_bad(x, (x < 0) | (x >= upper), f"is out of range (vocab_size {schema.vocab_size})")
        features: Features = x.astype(np.int64)
    else:
        if x.dtype.kind not in "iuf":
            raise DataFormatError(f"array 'x' must hold numbers, not {x.dtype}")
        with np.errstate(over="ignore"):  # overflow to inf is refused just below
            features = x.astype(np.float32)
        _first_bad(x, ~np.isfinite(features), "is not a finite float32 number")
    if y is None:
        return features, None
    if schema.num_classes is None:
        if y.dtype.kind not in "iuf":
            raise DataFormatError(f"array 'y' must hold numbers, not {y.dtype}")
        _first_bad(y, ~np.isfinite(y), "is not a finite number")
        return features, y.astype(np.float64)
    if y.dtype.kind not in "iu":
        raise DataFormatError(f"array 'y' must hold integer class indices, not {y.dtype}")
    out_of_range = (y < 0) | (y >= schema.num_classes)
    _first_bad(y, out_of_range, f"is out of range for {schema.num_classes} classes")
    return features, y.astype(np.int64)


def _check_npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_size: int) -> None:
    """Refuse a member whose .npy header declares more bytes than it holds, or than the cap,
    or Python objects: numpy allocates the declared shape before it reads a byte of data."""
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise DataFormatError(f"array {name!r} is .npy version {version}, not 1.0 or 2.0")
        held = info.file_size - member.tell()  # the zip member stops at its declared size
    if dtype.hasobject:
        raise DataFormatError(f"array {name!r} holds Python objects ({dtype}), not numbers")
    declared = math.prod(shape) * dtype.itemsize
    if declared > max_size:
        raise DataFormatError(
            f"array {name!r} declares shape {shape} of {dtype}: {declared:,} bytes, "
            f"over the cap of {max_size:,}"
        )
    if declared != held:
        raise DataFormatError(
            f"array {name!r} declares shape {shape} of {dtype} ({declared:,} bytes) "
            f"but holds {held:,} bytes"
        )


def _first_bad(array: npt.NDArray[Any], bad: npt.NDArray[np.bool_], why: str) -> None:
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        name = "x" if array.ndim == 2 else "y"
        where = f", column {index[1] + 1}" if len(index) == 2 else ""
        raise DataFormatError(
            f"row {index[0] + 1}{where} of {name!r} ({name}{list(index)}): {array[index]} {why}"
        )
