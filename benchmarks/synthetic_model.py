"""An untrained paper CNN at any input size, exported like a shipped model.

The issue's reference figures were measured with the paper's CNN at 128x128x1; our pneumonia model
takes 64x64x1, so its model work per request is a quarter of that while the HTTP work stays the
same. Serving this stand-in (random weights: only its cost matters) shows the service at the
reference model's size.

    python -m benchmarks.synthetic_model --size 128 --models /tmp/bench-models
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.contract.model_card import InputCard, read_card
from app.contract.model_store import METADATA_FILE, latest_version_dir
from app.contract.preprocessing import ColourMode, InputSpec

TEMPLATE_DISEASE = "pneumonia"  # its card is copied, with the input and description changed


def export_synthetic(models_dir: Path, size: int, card_source: Path, seed: int = 0) -> Path:
    """Export `<models_dir>/paper<size>/<next version>/`; returns the version folder."""
    import keras

    from training.networks.model import make_model
    from training.networks.servable import write_savedmodel
    from training.release.export import stage_version
    from training.release.trust import random_image_statistics

    keras.utils.set_random_seed(seed)
    spec = InputSpec(height=size, width=size, colour_mode=ColourMode.GRAYSCALE)
    name = f"paper{size}"
    template = read_card(latest_version_dir(card_source, TEMPLATE_DISEASE) / METADATA_FILE)

    card = template.model_copy(
        update={
            "disease": name,
            "input": InputCard.from_spec(spec),
            "description": f"benchmark stand-in: the paper's CNN at {size}x{size}x1 with random weights",
        }
    )
    model = make_model(spec)
    with stage_version(models_dir, name) as staged:
        write_savedmodel(model, spec, random_image_statistics(model, spec, seed), staged.folder)
        return staged.publish(card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--models", type=Path, required=True, help="models folder to export into")
    parser.add_argument("--card-from", type=Path, default=Path("models"), help="models folder with a pneumonia card")
    args = parser.parse_args()
    print(export_synthetic(args.models, args.size, args.card_from))


if __name__ == "__main__":
    main()
