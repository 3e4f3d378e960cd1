"""Peer 2: a BentoML 1.4 service with adaptive batching, serving the same SavedModels.

    MODELS=models bentoml serve benchmarks.peers.bentoml_service:Screening --port 8002

One batchable API per disease at /predict/<disease>, taking the image as multipart field `file`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import bentoml
import numpy as np
from PIL.Image import Image

MODELS = Path(os.environ.get("MODELS", "models"))
BATCH = dict(batchable=True, max_batch_size=32, max_latency_ms=1000)


def _load(disease: str):
    import tensorflow as tf

    folder = MODELS / disease
    latest = max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    card = json.loads((latest / "metadata.json").read_text())
    signature = tf.saved_model.load(str(latest)).signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1]  # called by keyword, as MedScan calls it
    return signature, input_name, card["input"]


def _run(model, images: list[Image]) -> list[dict[str, float]]:
    import tensorflow as tf

    signature, input_name, spec = model
    mode = "L" if spec["channels"] == 1 else "RGB"
    x = np.stack(
        [
            np.asarray(image.convert(mode).resize((spec["width"], spec["height"])), dtype=np.float32).reshape(
                spec["height"], spec["width"], spec["channels"]
            )
            / 255.0
            for image in images
        ]
    )
    (scores,) = signature(**{input_name: tf.constant(x)}).values()
    out = []
    for infected, uninfected in scores.numpy().tolist():
        total = infected + uninfected
        out.append({"infected": 100 * infected / total, "uninfected": 100 * uninfected / total})
    return out


@bentoml.service(workers=1, traffic={"timeout": 60, "concurrency": 256})
class Screening:
    def __init__(self) -> None:
        self.models = {d: _load(d) for d in ("malaria", "pneumonia", "paper128") if (MODELS / d).is_dir()}

    @bentoml.api(route="/predict/malaria", **BATCH)
    def malaria(self, file: list[Image]) -> list[dict[str, float]]:
        return _run(self.models["malaria"], file)

    @bentoml.api(route="/predict/pneumonia", **BATCH)
    def pneumonia(self, file: list[Image]) -> list[dict[str, float]]:
        return _run(self.models["pneumonia"], file)

    @bentoml.api(route="/predict/paper128", **BATCH)  # benchmarks/synthetic_model.py's stand-in, when served
    def paper128(self, file: list[Image]) -> list[dict[str, float]]:
        return _run(self.models["paper128"], file)
