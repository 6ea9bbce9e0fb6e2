"""Write safetensors files piece by piece, without holding whole tensors in memory.

The header (names, dtypes, shapes) is written first; tensor data is then written at explicit element
offsets with ordinary file writes (no memory map, so nothing accumulates in the process's resident memory).
The result is a standard safetensors file, readable by `safetensors.safe_open`.
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
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.itemsize


class SafetensorsWriter:
    """A safetensors file laid out from specs; fill each tensor with `write(name, start, array)`.

    bfloat16 data is given as its uint16 bit pattern (`torch_to_numpy` converts).
    """

    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None):
        header: dict[str, object] = {}
        self.offsets: dict[str, tuple[int, TensorSpec]] = {}
        offset = 0
        for spec in specs:
            header[spec.name] = {
                "dtype": SAFETENSORS_DTYPES[spec.dtype][0],
                "shape": list(spec.shape),
                "data_offsets": [offset, offset + spec.nbytes],
            }
            self.offsets[spec.name] = (offset, spec)
            offset += spec.nbytes
        if metadata:
            header["__metadata__"] = metadata
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
        header_bytes += b" " * (-len(header_bytes) % 8)
        self.data_start = 8 + len(header_bytes)
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.file.write(struct.pack("<Q", len(header_bytes)))
        self.file.write(header_bytes)
        self.file.truncate(self.data_start + offset)

    def write(self, name: str, start: int, array: np.ndarray) -> None:
        """Write `array` into tensor `name` from element `start` on (flat order)."""
        offset, spec = self.offsets[name]
        data = np.ascontiguousarray(array, dtype=SAFETENSORS_DTYPES[spec.dtype][1])
        self.file.seek(self.data_start + offset + start * spec.itemsize)
        self.file.write(data.data.cast("B"))

    def close(self) -> None:
        self.file.close()


def torch_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy view of a tensor; bfloat16 becomes its uint16 bit pattern."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()
