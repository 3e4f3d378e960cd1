"""ImageNet-derived weights from a TensorFlow.js layers model, for a Keras Applications network without its top.

No ImageNet weights can be downloaded here, but the npm registry carries TensorFlow.js models with their weights
inside the package. `nsfwjs` 4.4.0 (MIT) bundles Keras' MobileNetV2 (alpha 1.0, 224 px) that its authors
fine-tuned from ImageNet to five classes of web images, its topology marking blocks 0-10 as frozen (so at their
ImageNet values), stored as uint8 with a scale and an offset per tensor. This module reads such a model (a
standard `model.json` with binary shards, or the package's `.min.js` bundles), dequantizes it and writes the
weights of the matching network without its top, a file `--weights` then starts training from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# What a tfjs weight's stored dtype holds; quantized weights are stored smaller and dequantized here.
_STORED_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "float16": np.float16,
}
_BASE64_STRING = re.compile(r'"([A-Za-z0-9+/]{64,}={0,2})"')
# The variables of each layer in Keras' order, by their tfjs names.
_VARIABLE_ORDER = ("kernel", "depthwise_kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


class WeightsFormatError(ValueError):
    """The file is not a TensorFlow.js layers model, or its weights do not fit the network."""


@dataclass(frozen=True)
class TfjsModel:
    topology: dict
    weights: dict[str, np.ndarray]  # "layer/variable" -> dequantized float32 array


def read_tfjs_model(path: Path) -> TfjsModel:
    """A `model.json` (weights in the binary files its manifest names) or an nsfwjs `model.min.js` bundle."""
    try:
        return _read_tfjs_model(path)
    except (OSError, json.JSONDecodeError, binascii.Error, KeyError, TypeError) as error:
        raise WeightsFormatError(f"{path}: not a readable TensorFlow.js layers model ({error})") from error


def _read_tfjs_model(path: Path) -> TfjsModel:
    if path.suffix == ".json":
        document = json.loads(path.read_text())
        read_shard = lambda name: (path.parent / name).read_bytes()  # noqa: E731
    elif path.name.endswith(".min.js"):
        document = _evaluate_js_module(path)
        read_shard = lambda name: _base64_in_bundle(path.parent / f"{name}.min.js")  # noqa: E731
    else:
        raise WeightsFormatError(f"{path}: expected a TensorFlow.js model.json or an nsfwjs model.min.js")
    if "modelTopology" not in document or "weightsManifest" not in document:
        raise WeightsFormatError(f"{path}: no modelTopology and weightsManifest: not a TensorFlow.js layers model")
    weights: dict[str, np.ndarray] = {}
    for group in document["weightsManifest"]:
        buffer = b"".join(read_shard(name) for name in group["paths"])
        weights.update(_decode_group(group["weights"], buffer))
    return TfjsModel(topology=document["modelTopology"], weights=weights)


def _decode_group(entries: list[dict], buffer: bytes) -> dict[str, np.ndarray]:
    decoded, offset = {}, 0
    for entry in entries:
        quantization = entry.get("quantization")
        stored = np.dtype(_STORED_DTYPES[quantization["dtype"] if quantization else entry["dtype"]])
        count = int(np.prod(entry["shape"], dtype=np.int64))
        end = offset + count * stored.itemsize
        if end > len(buffer):
            raise WeightsFormatError(f"weight {entry['name']} runs past the end of its shards")
        values = np.frombuffer(buffer, dtype=stored, count=count, offset=offset).astype(np.float32)
        if quantization and quantization["dtype"] != "float16":
            values = values * np.float32(quantization["scale"]) + np.float32(quantization["min"])
        decoded[entry["name"]] = values.reshape(entry["shape"])
        offset = end
    if offset != len(buffer):
        raise WeightsFormatError(f"{len(buffer) - offset} bytes of the shards are not in the manifest")
    return decoded


def _evaluate_js_module(path: Path) -> dict:
    """The object a UMD bundle exports; its topology is a JavaScript literal, not JSON, so Node.js reads it."""
    node = shutil.which("node")
    if node is None:
        raise WeightsFormatError(f"{path}: reading a .min.js bundle needs Node.js (node) on PATH")
    script = "process.stdout.write(JSON.stringify(require(process.argv[1])))"
    done = subprocess.run([node, "-e", script, str(path.resolve())], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise WeightsFormatError(f"{path}: node could not read it: {done.stderr.strip()[:300]}")
    return json.loads(done.stdout)


def _base64_in_bundle(path: Path) -> bytes:
    """A shard bundle exports one base64 string: the shard's bytes."""
    strings = _BASE64_STRING.findall(path.read_text())
    if len(strings) != 1:
        raise WeightsFormatError(f"{path}: expected one base64 string, found {len(strings)}")
    return base64.b64decode(strings[0])


def assign_by_layer_name(model, weights: dict[str, np.ndarray]) -> list[str]:
    """Set every variable-holding layer of `model` from `weights` ("layer/variable"); returns the names left over.

    Strict on what the network needs: a missing layer or a shape that differs is an error, so that a file of
    another architecture or width cannot half-load.
    """
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for name, value in weights.items():
        layer_name, _, variable = name.rpartition("/")
        by_layer.setdefault(layer_name, {})[variable] = value
    for layer in model.layers:
        if not layer.weights:
            continue
        stored = by_layer.pop(layer.name, None)
        if stored is None:
            raise WeightsFormatError(f"the file has no weights for layer {layer.name!r}")
        ordered = [stored[variable] for variable in _VARIABLE_ORDER if variable in stored]
        expected = [tuple(variable.shape) for variable in layer.weights]
        if [value.shape for value in ordered] != expected:
            raise WeightsFormatError(
                f"layer {layer.name!r}: the file has shapes {[v.shape for v in ordered]}, the network {expected}"
            )
        layer.set_weights(ordered)
    return sorted(f"{layer}/{variable}" for layer, variables in by_layer.items() for variable in variables)


def package_json(source: Path) -> dict:
    """The package.json of the npm package a model file lies in (its `package/` folder), else {}."""
    for folder in source.resolve().parents:
        if folder.name == "package" and (folder / "package.json").is_file():
            return json.loads((folder / "package.json").read_text())
    return {}


def package_name(source: Path) -> str:
    """The npm package a model file came from, else its own folder's name: for the weights file's name."""
    return package_json(source).get("name") or source.resolve().parent.name


def import_no_top_weights(source: Path, arch: str, out: Path) -> dict:
    """Write `arch`'s weights without its top, read from the TensorFlow.js model `source`, and their record beside
    them (`<out stem>.json`: where they came from, for cards and reports); returns the record."""
    from training.networks.architectures import APPLICATIONS
    from training.networks.pretrain import record_path

    if arch not in APPLICATIONS:
        raise WeightsFormatError(f"{arch!r} is not a Keras Applications network ({', '.join(APPLICATIONS)})")
    if not source.is_file():
        raise WeightsFormatError(f"{source}: no such file")
    tfjs = read_tfjs_model(source)
    network = APPLICATIONS[arch][0](include_top=False, weights=None, input_shape=(None, None, 3))
    left_over = assign_by_layer_name(network, tfjs.weights)
    package = package_json(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial.weights.h5")
    network.save_weights(partial)
    record = {
        "imported_from": {
            "package": package.get("name"),
            "version": package.get("version"),
            "license": package.get("license"),
            "file": source.name,
            "keras_version": tfjs.topology.get("keras_version"),
        },
        "arch": arch,
        "weights": out.name,
        "sha256": hashlib.sha256(partial.read_bytes()).hexdigest(),
        "tensors_loaded": len(tfjs.weights) - len(left_over),
        "left_over": left_over,  # the source's own head, not used
    }
    record_path(out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(out)  # never a half-written weights file under the final name
    return record
