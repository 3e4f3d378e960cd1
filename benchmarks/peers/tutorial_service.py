"""Peer 1: a tutorial-style FastAPI service serving the same SavedModel: one model call per request,
in FastAPI's thread pool, with the usual Pillow preprocessing.

    MODELS=models uvicorn benchmarks.peers.tutorial_service:app --port 8001
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from fastapi import FastAPI, File, HTTPException, UploadFile
from PIL import Image

MODELS = Path(os.environ.get("MODELS", "models"))
app = FastAPI()
models: dict[str, tuple[Any, str, dict]] = {}

for folder in sorted(MODELS.iterdir()):
    if folder.is_dir():
        latest = max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        card = json.loads((latest / "metadata.json").read_text())
        signature = tf.saved_model.load(str(latest)).signatures["serving_default"]
        # Called by keyword, as MedScan calls it: a positional call costs ~1.4 ms more per call in
        # TF 2.21, and this comparison is about serving, not about that pitfall.
        (input_name,) = signature.structured_input_signature[1]
        models[folder.name] = (signature, input_name, card)


@app.get("/health/ready")
def ready() -> dict:
    return {"status": "ready"}


@app.post("/predict/{disease}")
def predict(disease: str, file: UploadFile = File(...)) -> dict:
    if disease not in models:
        raise HTTPException(404, "unknown disease")
    signature, input_name, card = models[disease]
    spec = card["input"]
    image = Image.open(io.BytesIO(file.file.read())).convert("L" if spec["channels"] == 1 else "RGB")
    image = image.resize((spec["width"], spec["height"]))
    x = np.asarray(image, dtype=np.float32).reshape(1, spec["height"], spec["width"], spec["channels"]) / 255.0
    (scores,) = signature(**{input_name: tf.constant(x)}).values()
    infected, uninfected = scores.numpy()[0].tolist()
    total = infected + uninfected
    return {"infected": 100 * infected / total, "uninfected": 100 * uninfected / total}
