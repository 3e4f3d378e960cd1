"""Tensors of the Open Inference Protocol (KServe V2) over HTTP: JSON data and the binary tensor data
extension (`Inference-Header-Content-Length`: a JSON header, then each binary tensor's raw bytes in
order; BYTES elements each prefixed by their length as a 4-byte little-endian integer).

No HTTP here: malformed tensors raise `TensorError`, which the route answers with 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class TensorError(Exception):
    """A request body or tensor that does not follow the protocol."""


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    value: np.ndarray | list[bytes]  # numbers as an array of `shape`; BYTES as a flat list


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary part after it (empty without the extension)."""
    if header_length is None:
        header, rest = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise TensorError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise TensorError(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
        header, rest = body[:length], body[length:]
    try:
        request = json.loads(header)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; nesting past the stack is refused
        raise TensorError("the request header is not valid JSON") from None
    if not isinstance(request, dict):
        raise TensorError("the request must be a JSON object")
    return request, rest


def read_inputs(request: dict[str, Any], binary: bytes) -> list[Tensor]:
    specs = request.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise TensorError("'inputs' must be a non-empty list of tensors")
    tensors, offset = [], 0
    for spec in specs:
        tensor, used = _read_tensor(spec, binary[offset:])
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise TensorError(f"{len(binary) - offset} bytes of binary data belong to no input")
    return tensors


def _read_tensor(spec: Any, binary: bytes) -> tuple[Tensor, int]:
    if not isinstance(spec, dict):
        raise TensorError("each input must be an object with name, shape, datatype and data")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise TensorError("each input needs a 'name' and a 'datatype'")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):  # not bool: True is 1
        raise TensorError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = math.prod(shape)  # exact: numpy's product wraps around past 2**63, and a huge shape would look empty
    size = parameters_of(spec, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or not 0 <= size <= len(binary):
            raise TensorError(f"input {name!r}: binary_data_size {size!r} is larger than the data sent")
        value = _from_binary(name, datatype, shape, count, binary[:size])
        return Tensor(name, datatype, shape, value), size
    if "data" not in spec:
        raise TensorError(f"input {name!r} has neither 'data' nor binary_data_size")
    return Tensor(name, datatype, shape, _from_json(name, datatype, shape, count, spec["data"])), 0


def _from_binary(name: str, datatype: str, shape: list[int], count: int, raw: bytes) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":
        elements, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise TensorError(f"input {name!r}: truncated BYTES element length")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise TensorError(f"input {name!r}: a BYTES element runs past the data sent")
            elements.append(raw[offset : offset + length])
            offset += length
        return _check_count(name, elements, count)
    dtype = _numeric(name, datatype)
    if len(raw) != count * np.dtype(dtype).itemsize:
        raise TensorError(f"input {name!r}: {len(raw)} bytes do not hold {count} {datatype} values")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _from_json(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":  # binary content has no JSON form: base64, as KServe's examples send images
        flat = np.asarray(data, dtype=object).reshape(-1).tolist() if isinstance(data, list) else [data]
        try:
            elements = [base64.b64decode(item, validate=True) for item in flat]
        except (binascii.Error, ValueError, TypeError):
            raise TensorError(
                f"input {name!r}: BYTES data in JSON must be base64 strings "
                "(or send it with the binary tensor data extension)"
            ) from None
        return _check_count(name, elements, count)
    dtype = _numeric(name, datatype)
    try:
        array: np.ndarray = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError):
        raise TensorError(f"input {name!r}: data is not a list of {datatype} numbers") from None
    except OverflowError:  # e.g. 300 as UINT8: numpy refuses rather than wraps
        raise TensorError(f"input {name!r}: a value does not fit {datatype}") from None
    if array.size != count:
        raise TensorError(f"input {name!r}: {array.size} values do not fill shape {shape}")
    return array.reshape(shape)


def parameters_of(owner: dict[str, Any], where: str) -> dict[str, Any]:
    """The `parameters` object of a request, an input or an output: {} where absent."""
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise TensorError(f"{where}: 'parameters' must be an object")
    return parameters


def _numeric(name: str, datatype: str) -> type:
    if datatype not in NUMERIC:
        raise TensorError(f"input {name!r}: unknown datatype {datatype!r}")
    return NUMERIC[datatype]


def _check_count(name: str, elements: list[bytes], count: int) -> list[bytes]:
    if len(elements) != count:
        raise TensorError(f"input {name!r}: {len(elements)} BYTES elements do not fill its shape ({count})")
    return elements


def encode_outputs(outputs: list[Tensor], binary_names: set[str]) -> tuple[dict[str, Any], list[bytes]]:
    """Output tensors as JSON entries, with the raw bytes of those asked for in binary."""
    entries, chunks = [], []
    for tensor in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.name in binary_names:
            raw = _to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif tensor.datatype == "BYTES":
            entry["data"] = [item.decode("utf-8") for item in tensor.value]
        else:  # JSON has no NaN: an unknown value is null
            entry["data"] = [
                None if isinstance(v, float) and v != v else v for v in np.asarray(tensor.value).reshape(-1).tolist()
            ]
        entries.append(entry)
    return {"outputs": entries}, chunks


def _to_binary(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in tensor.value)
    return np.ascontiguousarray(tensor.value, dtype=NUMERIC[tensor.datatype]).tobytes()
