"""Write safetensors files whose tensors are filled piece by piece, without holding them in memory.

The header (names, dtypes, shapes) is known up front; the data region is memory-mapped and written in
place, so a file far larger than RAM can be assembled from slices. The result is a standard
safetensors file, readable by `safetensors.safe_open`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SAFETENSORS_DTYPES = {
    torch.int64: ("I64", np.int64),
    torch.int32: ("I32", np.int32),
    torch.float32: ("F32", np.float32),
    torch.bfloat16: ("BF16", np.uint16),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * torch.empty((), dtype=self.dtype).element_size()


class MappedSafetensors:
    """A safetensors file laid out from specs whose tensors are numpy memmaps to fill.

    bfloat16 tensors are exposed as uint16 arrays of the raw bits (`torch_to_numpy` converts).
    """

    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None):
        header: dict[str, object] = {}
        offset = 0
        for spec in specs:
            header[spec.name] = {
                "dtype": SAFETENSORS_DTYPES[spec.dtype][0],
                "shape": list(spec.shape),
                "data_offsets": [offset, offset + spec.nbytes],
            }
            offset += spec.nbytes
        if metadata:
            header["__metadata__"] = metadata
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
        header_bytes += b" " * (-len(header_bytes) % 8)
        data_start = 8 + len(header_bytes)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(header_bytes)))
            f.write(header_bytes)
            f.truncate(data_start + offset)
        self.arrays: dict[str, np.ndarray] = {}
        for spec in specs:
            begin = data_start + header[spec.name]["data_offsets"][0]  # type: ignore[index]
            np_dtype = SAFETENSORS_DTYPES[spec.dtype][1]
            if spec.nbytes == 0:
                self.arrays[spec.name] = np.empty(spec.shape, dtype=np_dtype)
            else:
                self.arrays[spec.name] = np.memmap(
                    path, dtype=np_dtype, mode="r+", offset=begin, shape=spec.shape
                )

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def close(self) -> None:
        for array in self.arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        self.arrays.clear()


def torch_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy view of a tensor; bfloat16 becomes its uint16 bit pattern."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()
