"""Weights read from a TensorFlow.js layers model land in the matching Keras network, dequantized, or not at all."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from training.networks.tfjs_weights import (
    WeightsFormatError,
    assign_by_layer_name,
    import_no_top_weights,
    read_tfjs_model,
)

pytestmark = pytest.mark.slow


def tfjs_entries(model: keras.Model, *, quantize: bool, skip: str = "") -> tuple[list[dict], bytes]:
    """A model's weights as a tfjs manifest, uint8-quantized per tensor as tensorflowjs_converter does."""
    entries, chunks = [], []
    for layer in model.layers:
        for variable in layer.weights:
            value = np.asarray(variable.numpy(), dtype=np.float32)
            name = f"{layer.name}/{variable.path.rsplit('/', 1)[-1]}"
            if skip and name.startswith(skip):
                continue
            entry = {"name": name, "shape": list(value.shape), "dtype": "float32"}
            if quantize:
                low, high = float(value.min()), float(value.max())
                scale = (high - low) / 255 or 1.0
                entry["quantization"] = {"min": low, "scale": scale, "dtype": "uint8"}
                chunks.append(np.round((value - low) / scale).astype(np.uint8).tobytes())
            else:
                chunks.append(value.tobytes())
            entries.append(entry)
    # Shuffled, as a converter may order them: names, not order, decide where a tensor goes.
    order = np.random.default_rng(0).permutation(len(entries))
    return [entries[i] for i in order], b"".join(chunks[i] for i in order)


def write_model_json(folder: Path, model: keras.Model, *, quantize: bool, skip: str = "") -> Path:
    entries, shard = tfjs_entries(model, quantize=quantize, skip=skip)
    (folder / "group1-shard1of1.bin").write_bytes(shard)
    document = {
        "modelTopology": {"class_name": "Model"},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": entries}],
    }
    (folder / "model.json").write_text(json.dumps(document))
    return folder / "model.json"


def umd_bundle(javascript_value: str) -> str:
    """A value wrapped as nsfwjs's bundles wrap theirs: a UMD module that returns it."""
    return (
        '!function(e){"object"==typeof exports&&"undefined"!=typeof module?module.exports=e():this.model=e()}'
        f"(function(){{return {javascript_value}}});"
    )


def mobilenet(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3))


def test_a_quantized_model_json_imports_within_one_quantization_step(tmp_path: Path) -> None:
    source = mobilenet(seed=1)
    model_json = write_model_json(tmp_path, source, quantize=True)

    summary = import_no_top_weights(model_json, "mobilenet_v2", tmp_path / "out" / "mnv2.weights.h5")

    assert summary["left_over"] == [] and summary["tensors_loaded"] == len(source.weights)
    imported = mobilenet(seed=2)
    imported.load_weights(tmp_path / "out" / "mnv2.weights.h5")
    for expected, got in zip(source.weights, imported.weights, strict=True):
        want = expected.numpy()
        step = (want.max() - want.min()) / 255
        np.testing.assert_allclose(got.numpy(), want, atol=step / 2 + 1e-6)
    # No partial file left behind; the record beside the weights says where they came from.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mnv2.weights.h5", "mnv2.weights.json"]
    from training.networks.pretrain import pretraining_record

    record = pretraining_record(tmp_path / "out" / "mnv2.weights.h5")
    assert record is not None and record["arch"] == "mobilenet_v2" and record["imported_from"]["file"] == "model.json"
    assert record["sha256"] == hashlib.sha256((tmp_path / "out" / "mnv2.weights.h5").read_bytes()).hexdigest()


def test_float_weights_import_exactly_and_the_source_head_is_left_over(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    source = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    for layer in source.layers:
        layer.set_weights(
            [np.random.default_rng(3).normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    tfjs = read_tfjs_model(write_model_json(tmp_path, source, quantize=False))
    trunk = keras.Model(
        inputs, keras.layers.BatchNormalization(name="conv_bn")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    )

    left_over = assign_by_layer_name(trunk, tfjs.weights)

    assert left_over == ["head/bias", "head/kernel"]
    for name in ("conv", "conv_bn"):
        for got, want in zip(trunk.get_layer(name).get_weights(), source.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_network_of_another_width_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    narrow = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3), alpha=0.5)
    model_json = write_model_json(tmp_path, narrow, quantize=False)

    with pytest.raises(WeightsFormatError, match="shapes"):
        import_no_top_weights(model_json, "mobilenet_v2", tmp_path / "out.weights.h5")
    assert not (tmp_path / "out.weights.h5").exists()


def test_a_missing_layer_and_bytes_the_manifest_does_not_name_are_refused(tmp_path: Path) -> None:
    source = mobilenet(seed=1)
    model_json = write_model_json(tmp_path, source, quantize=True, skip="Conv1/")
    with pytest.raises(WeightsFormatError, match="no weights for layer 'Conv1'"):
        import_no_top_weights(model_json, "mobilenet_v2", tmp_path / "out.weights.h5")

    shard = tmp_path / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes() + b"\0")
    with pytest.raises(WeightsFormatError, match="not in the manifest"):
        read_tfjs_model(model_json)
    shard.write_bytes(b"\0" * 10)
    with pytest.raises(WeightsFormatError, match="past the end"):
        read_tfjs_model(model_json)
    assert not (tmp_path / "out.weights.h5").exists()


def test_other_files_and_other_architectures_are_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(WeightsFormatError, match="model.json"):
        read_tfjs_model(tmp_path / "weights.h5")
    (tmp_path / "model.json").write_text(json.dumps({"format": "graph-model"}))
    with pytest.raises(WeightsFormatError, match="layers model"):
        read_tfjs_model(tmp_path / "model.json")
    with pytest.raises(WeightsFormatError, match="Keras Applications"):
        import_no_top_weights(tmp_path / "model.json", "paper_cnn", tmp_path / "out.weights.h5")


@pytest.mark.skipif(shutil.which("node") is None, reason="reading an nsfwjs .min.js bundle needs Node.js")
def test_an_nsfwjs_style_bundle_reads_like_its_model_json(tmp_path: Path) -> None:
    source = mobilenet(seed=1)
    entries, shard = tfjs_entries(source, quantize=True)
    document = {
        "modelTopology": {"keras_version": "2.2.4"},
        "weightsManifest": [{"paths": ["group1-shard1of1"], "weights": entries}],
    }
    (tmp_path / "model.min.js").write_text(umd_bundle(json.dumps(document)))
    (tmp_path / "group1-shard1of1.min.js").write_text(umd_bundle(f'"{base64.b64encode(shard).decode()}"'))
    reference = tmp_path / "json"
    reference.mkdir()

    from_bundle = read_tfjs_model(tmp_path / "model.min.js")
    from_json = read_tfjs_model(write_model_json(reference, source, quantize=True))

    assert from_bundle.weights.keys() == from_json.weights.keys()
    for name, value in from_json.weights.items():
        np.testing.assert_array_equal(from_bundle.weights[name], value)


def test_the_command_names_the_file_after_its_package_and_refuses_a_missing_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.cli import main

    monkeypatch.chdir(tmp_path)
    package = tmp_path / "package"
    (package / "dist").mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": "somejs", "version": "1.2.3", "license": "MIT"}))
    model_json = write_model_json(package / "dist", mobilenet(seed=1), quantize=True)
    out = tmp_path / "backbones" / "mobilenet_v2-somejs.weights.h5"

    assert main(["import-weights", str(model_json)]) == 0
    assert out.is_file()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["imported_from"] == {
        "package": "somejs",
        "version": "1.2.3",
        "license": "MIT",
        "file": "model.json",
        "keras_version": None,
    }
    (package / "dist" / "group1-shard1of1.bin").unlink()
    assert main(["import-weights", str(model_json), "--out", str(tmp_path / "other.weights.h5")]) == 2
    assert not (tmp_path / "other.weights.h5").exists()
