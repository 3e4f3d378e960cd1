"""How many threads TensorFlow gets: the setting, or a choice from the cores a container really has."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.runtime.tf_runtime import available_cores, heaviest_model_pixels, intra_op_threads

LIGHT, HEAVY = 64 * 64, 64 * 64 * 3  # pneumonia; malaria answered over three views


@pytest.mark.parametrize(
    ("setting", "cores", "pixels", "threads"),
    [
        (0, 1, LIGHT, 1),
        (0, 2, LIGHT, 1),
        (0, 4, LIGHT, 3),
        (0, 1, HEAVY, 1),
        (0, 2, HEAVY, 2),
        (0, 16, HEAVY, 16),
        (0, 2, 0, 1),
        (3, 2, HEAVY, 3),
    ],  # fmt: skip
)
def test_the_setting_wins_else_light_models_leave_the_event_loop_a_core(
    setting: int, cores: int, pixels: int, threads: int
) -> None:
    assert intra_op_threads(setting, cores, pixels) == threads


def test_the_heaviest_model_is_read_from_the_cards_views_included(tmp_path: Path) -> None:
    from app.contract.model_card import write_card
    from app.contract.model_store import METADATA_FILE
    from app.contract.preprocessing import ColourMode, InputSpec
    from tests.model_fixtures import fixture_card

    models = tmp_path / "models"
    assert heaviest_model_pixels(models) == 0  # no folder: nothing to weigh
    for disease, side, flips in (("malaria", 50, []), ("pneumonia", 48, ["horizontal", "vertical"])):
        card = fixture_card(disease, 1, InputSpec(side, side, ColourMode.GRAYSCALE))
        (models / disease / "1").mkdir(parents=True)
        write_card(card.model_copy(update={"test_time_flips": flips}), models / disease / "1" / METADATA_FILE)
    (models / "broken" / "1").mkdir(parents=True)
    (models / "broken" / "1" / METADATA_FILE).write_text("{not json")
    # the smaller input, but four views of it: as sent, mirrored, upside down and both, as the graph runs them
    assert heaviest_model_pixels(models) == 48 * 48 * 4


def test_a_container_quota_caps_the_cores(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # 1 CPU
    assert available_cores(quota) == 1
    quota.write_text("50000 100000\n")  # half a CPU still runs one thread
    assert available_cores(quota) == 1
    quota.write_text("max 100000\n")
    assert available_cores(quota) == affinity
    assert available_cores(tmp_path / "absent") == affinity
    quota.write_text("garbage")
    assert available_cores(quota) == affinity


def test_the_service_starts_tensorflow_without_importing_keras(served_models_dir: Path) -> None:
    """In a fresh process, as `medscan serve` runs it: TensorFlow set up, then a model loaded and answering,
    and Keras (which TensorFlow would import eagerly, with scikit-learn) never imported."""
    import subprocess
    import sys

    program = (
        "import sys, numpy as np; from pathlib import Path; from app.runtime import tf_runtime; "
        f"tf_runtime.configure(1, 1, Path({str(served_models_dir)!r})); "
        "from app.contract.savedmodel import load_model; "
        f"m = load_model(Path({str(served_models_dir / 'malaria' / '1')!r})); "
        "m.analyse(np.zeros((1, *m.card.input.spec().shape), np.float32)); "
        "print(sorted(name for name in ('keras', 'sklearn') if name in sys.modules))"
    )
    environment = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env=environment, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
