"""The benchmark code, on small data (the benchmarks themselves run outside CI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import input_pipeline, raw_model, serving


def test_raw_model_measures_latency_and_throughput(model_factory, tmp_path: Path) -> None:
    models = tmp_path / "models"
    model_factory(models, "malaria")
    result = raw_model.measure("malaria", models, batch_sizes=[1, 4], seconds=0.05)
    assert result["single_call_ms"]["p50"] > 0 and result["single_call_after_10ms_idle_ms"]["p50"] > 0
    assert set(result["images_per_second_by_batch"]) == {1, 4}
    assert result["R_images_per_second"] == max(result["images_per_second_by_batch"].values())


def test_input_pipeline_benchmark_writes_its_result(synthetic_data: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "results"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "input_pipeline",
            "--data",
            str(synthetic_data),
            "--images",
            "20",
            "--epochs",
            "1",
            "--rounds",
            "1",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ],
    )
    input_pipeline.main()
    result = json.loads((out / "input_pipeline-malaria.json").read_text())
    assert result["images"] == 20 and result["input"] == [64, 64, 3]  # as asked; malaria's colour input
    assert {name: len(rates) for name, rates in result["images_per_second"].items()} == {"tf_data": 1, "in_memory": 1}
    assert result["ratio_tf_data_to_in_memory"] > 0


def test_serving_report_renders_every_measurement() -> None:
    load = {
        "requests": 10,
        "seconds": 1.0,
        "requests_per_second": 10.0,
        "status_200": 9,
        "status_503": 1,
        "status_other": 0,
        "socket_errors": 0,
        "timeouts": 0,
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
    }
    system = {
        "ready_seconds": 3.2,
        "rss_mb_after_start": 400.0,
        "rss_mb_after_load": 410.0,
        "load": {"malaria": {"1": load, "32": load}},
    }
    report = {
        "raw": [
            {
                "disease": "malaria",
                "input": [50, 50, 1],
                "signature": "analyse",
                "R_images_per_second": 900.0,
                "R_batch_size": 64,
                "single_call_ms": {"p50": 1.1},
                "single_call_after_10ms_idle_ms": {"p50": 2.2},
            }
        ],
        "systems": {"medscan": system, "tutorial": system},
        "overload": {**system, "load": {"malaria": {"128": load}}},
    }
    text = serving.markdown(report)
    assert text.count("| malaria |") == 4
    assert "raw R = 900.0 img/s" in text and "9 x 200, 1 x 503" in text
    assert "1.1 ms back to back, 2.2 ms after 10 ms idle" in text


def test_synthetic_model_is_served_like_a_shipped_one(model_factory, tmp_path: Path) -> None:
    from app.savedmodel import load_model
    from benchmarks.synthetic_model import export_synthetic

    shipped = tmp_path / "shipped"
    model_factory(shipped, "pneumonia")
    folder = export_synthetic(tmp_path / "bench", 48, shipped)
    model = load_model(folder)  # the service's own loader: card and graph agree
    assert folder == tmp_path / "bench" / "paper48" / "1"
    assert model.card.disease == "paper48" and model.card.input.spec().shape == (48, 48, 1)


def test_synthetic_models_folder_links_the_shipped_models_beside_the_stand_in(
    model_factory, tmp_path: Path, monkeypatch
) -> None:
    shipped = tmp_path / "shipped"
    model_factory(shipped, "pneumonia")
    model_factory(shipped, "malaria")
    calls = []
    monkeypatch.setattr(serving.subprocess, "run", lambda command, **kwargs: calls.append(command))
    folder, name = serving.with_synthetic_model(shipped, 128)
    assert name == "paper128"
    assert sorted(p.name for p in folder.iterdir()) == ["malaria", "pneumonia"]
    assert (folder / "malaria").resolve() == (shipped / "malaria").resolve()
    assert calls and calls[0][-6:] == ["--size", "128", "--models", str(folder), "--card-from", str(shipped)]
