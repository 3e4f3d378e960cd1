"""Screenshot of the web page answering with the shipped models, for the README (docs/web-page.png).

Images: two drawn cells and a public-domain photograph (skimage's astronaut, NASA), so nothing from the
data sets is committed. Usage: .venv/bin/python scripts/web_screenshot.py [--out docs/web-page.png]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
PORT = 8765


def drawn_cell(parasite: bool, seed: int) -> bytes:
    """A pink disc on black, 64 x 64 like the colour malaria crops; with a purple ring (the stain of a ring-stage
    parasite) when `parasite`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    inside = ((xx - 32) / 29) ** 2 + ((yy - 32) / 27) ** 2 < 1
    cell = np.array([205.0, 150.0, 160.0])  # Giemsa-stained red cell: pink
    pixels = np.where(inside[..., None], cell + rng.normal(0, 4, (64, 64, 3)), 0.0)
    if parasite:
        ring = np.abs(np.hypot(xx - 38, yy - 25) - 4) < 1.6
        pixels[ring] = [110.0, 50.0, 140.0]  # the parasite's chromatin and cytoplasm: purple
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(0.6))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def photograph() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "PNG")
    return buffer.getvalue()


def wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the service did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web-page.png")
    args = parser.parse_args()
    env = {**os.environ, "MEDSCAN_MODELS_DIR": str(ROOT / "models"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(PORT)], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{PORT}"
    try:
        wait_ready(url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(url + "/")
            page.wait_for_selector("#disease option[value='malaria']", state="attached")
            page.select_option("#disease", "malaria")
            page.set_input_files(
                "#files",
                [
                    {"name": "drawn-cell-with-spot.png", "mimeType": "image/png", "buffer": drawn_cell(True, 1)},
                    {"name": "drawn-cell.png", "mimeType": "image/png", "buffer": drawn_cell(False, 2)},
                    {"name": "astronaut.png", "mimeType": "image/png", "buffer": photograph()},
                ],
            )
            page.click("#screen")
            page.wait_for_function("document.querySelectorAll('#results [aria-busy]').length === 0")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
