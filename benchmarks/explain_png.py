"""What an explained answer's overlay PNG costs to encode, by encoder and setting, on the served overlays.

    python -m benchmarks.explain_png --data ../shared/datasets --models models --diseases pneumonia malaria

For each disease, a few real test images are explained by the shipped model exactly as the service does it
(`class_heatmap`, `overlay` of `app/runtime/explanations.py`); each overlay is then encoded with every setting below
and the median time and size are reported (each checked to decode to the same pixels). Writes
benchmarks/results/explain-png.{json,md}. Without --data, synthetic gradients stand in for the images (the times
then say little about real overlays).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from app.contract.model_store import latest_version_dir
from app.contract.preprocessing import load_first_frame, model_region, read_header, to_pixels
from app.contract.savedmodel import load_model
from app.runtime.explanations import class_heatmap, overlay, png_bytes


def pillow(**options: int) -> Callable[[Image.Image], bytes]:
    def encode(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **options)
        return buffer.getvalue()

    return encode


SETTINGS: dict[str, Callable[[Image.Image], bytes]] = {  # name -> encoder
    "Pillow, level 6 (its default)": pillow(compress_level=6),
    "Pillow, level 1": pillow(compress_level=1),
    "Pillow, level 1, run-length only": pillow(compress_level=1, compress_type=zlib.Z_RLE),
    "Up filter + ISA-L level 1 (served: app/runtime/png.py)": png_bytes,
}
RESULTS = Path(__file__).parent / "results"


def images_of(data_dir: Path | None, disease: str, count: int) -> list[bytes]:
    if data_dir is None:
        gradient = np.tile(np.linspace(0, 255, 224, dtype=np.uint8), (224, 1))
        buffer = io.BytesIO()
        Image.fromarray(gradient).save(buffer, format="PNG")
        return [buffer.getvalue()] * count
    files = sorted((data_dir / disease / "infected").iterdir())[::97][:count]
    return [path.read_bytes() for path in files]


def measure(disease: str, models_dir: Path, data_dir: Path | None, count: int, repeats: int) -> dict:
    model = load_model(latest_version_dir(models_dir, disease))
    spec = model.card.input.spec()
    overlays = []
    for data in images_of(data_dir, disease, count):
        image = load_first_frame(read_header(data, max_pixels=10**8))
        pixels = (to_pixels(image, spec).astype(np.float32) / 255)[np.newaxis]
        heatmap = class_heatmap(np.asarray(model.explain(pixels))[0], 0)
        overlays.append(overlay(image, heatmap, region=model_region(image, spec)))
    figures = {}
    for name, encode in SETTINGS.items():
        times, sizes = [], []
        for picture in overlays:
            encode(picture)
            started = time.perf_counter()
            for _ in range(repeats):
                encoded = encode(picture)
            times.append((time.perf_counter() - started) / repeats * 1000)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")), np.asarray(picture))
            sizes.append(len(encoded))
        figures[name] = {"ms": round(statistics.median(times), 2), "kb": round(statistics.median(sizes) / 1000, 1)}
    sides = sorted(max(picture.size) for picture in overlays)
    return {"disease": disease, "images": len(overlays), "overlay_side_median": sides[len(sides) // 2], **figures}


def markdown(rows: list[dict]) -> str:
    lines = [
        "| disease | images | overlay side (median) | " + " | ".join(SETTINGS) + " |",
        "|---|---|---|" + "---|" * len(SETTINGS),
    ]
    for row in rows:
        cells = " | ".join(f"{row[name]['ms']} ms, {row[name]['kb']} KB" for name in SETTINGS)
        lines.append(f"| {row['disease']} | {row['images']} | {row['overlay_side_median']} px | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--diseases", nargs="+", default=["pneumonia", "malaria"])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows = [measure(disease, args.models, args.data, args.images, args.repeats) for disease in args.diseases]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "explain-png.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "explain-png.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
