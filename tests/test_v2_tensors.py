from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from app.api.v2_tensors import Tensor, TensorError, encode_outputs, read_inputs, split_body


def bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def test_binary_inputs_are_read_in_order_after_the_json_header() -> None:
    pixels = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    header = json.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + 3 + 4 + 1}},
                {"name": "b", "shape": [1, 2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
            ]
        }
    ).encode()
    body = header + bytes_element(b"abc") + bytes_element(b"d") + pixels.tobytes()
    request, binary = split_body(body, str(len(header)))
    first, second = read_inputs(request, binary)
    assert first.value == [b"abc", b"d"]
    np.testing.assert_array_equal(second.value, pixels)


@pytest.mark.parametrize(
    "inputs, binary, words",
    [
        (
            [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
            b"\0" * 8,
            "do not hold",
        ),
        (
            [{"name": "a", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}],
            struct.pack("<I", 9) + b"ab",
            "runs past",
        ),
        ([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], b"xx", "belong to no input"),
        ([{"name": "a", "shape": [1], "datatype": "COMPLEX", "data": [1]}], b"", "unknown datatype"),
        ([{"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}], b"", "non-negative"),
        ([{"name": "a", "shape": [True, 1], "datatype": "FP32", "data": [1]}], b"", "non-negative integers"),
        # 2**64 elements: a product that wraps around to 0 would let an empty tensor through
        ([{"name": "a", "shape": [2**32, 2**32], "datatype": "FP32", "data": []}], b"", "do not fill"),
        (
            [{"name": "a", "shape": [2**32, 2**32], "datatype": "FP32", "parameters": {"binary_data_size": 0}}],
            b"",
            "do not hold",
        ),
        ([{"name": "a", "shape": [1], "datatype": "UINT8", "data": [300]}], b"", "does not fit UINT8"),
        ([{"name": "a", "shape": [1], "datatype": "INT8", "data": [-200]}], b"", "does not fit INT8"),
        ([{"name": "a", "shape": [1], "datatype": "INT64", "data": [10**30]}], b"", "does not fit INT64"),
        ([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1], "parameters": [4]}], b"", "must be an object"),
    ],
)
def test_malformed_tensors_are_refused_with_a_reason(inputs, binary: bytes, words: str) -> None:
    with pytest.raises(TensorError, match=words):
        read_inputs({"inputs": inputs}, binary)


def test_outputs_in_json_and_in_binary() -> None:
    outputs = [Tensor("p", "FP32", [2], np.array([0.5, np.nan], np.float32)), Tensor("l", "BYTES", [1], [b"x"])]
    header, chunks = encode_outputs(outputs, {"l"})
    assert header["outputs"][0]["data"] == [0.5, None]  # NaN has no JSON form
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 5} and chunks == [bytes_element(b"x")]


def test_a_header_nested_deeper_than_the_parser_can_go_is_not_valid_json() -> None:
    header = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(TensorError, match="not valid JSON"):
        split_body(header, None)
