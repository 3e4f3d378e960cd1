"""The benchmark code, on small data (the benchmarks themselves run outside CI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from app.contract.machine import describe_machine
from benchmarks import input_pipeline, raw_model, serving


def test_raw_model_measures_latency_and_throughput(model_factory, tmp_path: Path) -> None:
    models = tmp_path / "models"
    model_factory(models, "malaria")
    result = raw_model.measure("malaria", models, batch_sizes=[1, 4], seconds=0.05)
    assert result["single_call_ms"]["p50"] > 0 and result["single_call_after_10ms_idle_ms"]["p50"] > 0
    assert set(result["images_per_second_by_batch"]) == {1, 4}
    assert result["R_images_per_second"] == max(result["images_per_second_by_batch"].values())
    assert result["machine"] == describe_machine()  # latencies compare only within one machine


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


def load_at(rps: float, p50: float, p99: float, errors: int = 0) -> dict:
    return {
        "requests_per_second": rps,
        "status_200": 100,
        "status_503": 0,
        "status_other": errors,
        "socket_errors": 0,
        "timeouts": 0,
        "latency_ms": {"p50": p50, "p95": p99, "p99": p99, "max": p99},
    }


def test_the_targets_are_judged_from_the_same_run() -> None:
    raw = [
        {"disease": "pneumonia", "R_images_per_second": 2000.0, "single_call_ms": {"p50": 1.2}},
        {"disease": "malaria", "R_images_per_second": 3000.0, "single_call_ms": {"p50": 1.0}},
    ]
    ours = {
        "ready_seconds": 4.0,
        "rss_mb_after_load": 850.0,
        "load": {
            "pneumonia": {"1": load_at(300, 2.0, 3.0), "32": load_at(1100, 20.0, 55.0)},
            "malaria": {"32": load_at(1400, 20.0, 50.0)},
        },
        "explain": {"pneumonia": load_at(100, 7.0, 9.0)},
    }
    tutorial = {"load": {"pneumonia": {"32": load_at(400, 50.0, 300.0)}}}
    verdicts = {what: (measured, met) for what, measured, met in serving.targets({"raw": raw, "systems": {
        "medscan": ours, "tutorial": tutorial}})}  # fmt: skip
    assert verdicts["pneumonia, concurrency 32: >= 0.5 x R"] == ("1100 req/s = 0.55 x R (2000)", True)
    assert verdicts["pneumonia, concurrency 32: >= 2.5 x the tutorial-style service"] == ("2.75 x", True)
    assert verdicts["pneumonia, concurrency 1: p50 <= single model call + 1.0 ms"][1] is True  # 2.0 <= 2.2
    assert verdicts["malaria, concurrency 32: >= 0.5 x R"][1] is False  # 1400 < 1500
    assert verdicts["resident memory <= 800 MB, one worker"] == ("850.0 MB", False)
    assert verdicts["pneumonia, ?explain=true <= 3 x a plain answer's latency (p50, concurrency 1)"][1] is False
    assert [met for _, met in verdicts.values()].count(True) == 5 and len(verdicts) == 8
    errors = {**ours, "load": {**ours["load"], "pneumonia": {"32": load_at(1100, 20.0, 55.0, errors=1)}}}
    with_errors = serving.targets({"raw": raw, "systems": {"medscan": errors}})
    assert ("pneumonia, concurrency 32: p99 <= 60 ms, no errors", "p99 55.0 ms, 1 errors", False) in with_errors
    assert "| resident memory <= 800 MB, one worker | 850.0 MB | **no** |" in serving.targets_markdown(
        {"raw": raw, "systems": {"medscan": ours}}
    )


def test_synthetic_model_is_served_like_a_shipped_one(model_factory, tmp_path: Path) -> None:
    from app.contract.savedmodel import load_model
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


def test_profile_samples_fall_in_the_deepest_matching_stage_and_idle_is_not_cpu() -> None:
    from benchmarks.profile_stages import budget, stage_samples

    raw = "\n".join(
        [
            "thread (1): MainThread;run_asgi (httptools_impl.py:1);_decode (inference.py:2);"
            "load_first_frame (preprocessing.py:3);load (PIL/ImageFile.py:4) 30",
            "thread (1): MainThread;run_asgi (httptools_impl.py:1);solve_dependencies (fastapi/utils.py:5) 10",
            "thread (2): batcher-x;_run (batching.py:6);_answer (batching.py:7);quick_execute (execute.py:8) 40",
            "thread (2): batcher-x;_run (batching.py:6);_collect (batching.py:185) 500",
            "thread (1): MainThread;mystery (elsewhere.py:9) 20",
        ]
    )
    samples = stage_samples(raw)
    assert samples == {
        "image: decode": 30,
        "FastAPI routing + parameters": 10,
        "model call": 40,
        "idle (waiting, not CPU)": 500,
        "other": 20,
    }
    rows = budget(samples, rate=100, requests=10)  # 100 samples of CPU = 1 s over 10 requests
    assert rows[0] == {"stage": "model call", "ms_per_request": 40.0, "share": 0.4}
    assert sum(row["ms_per_request"] for row in rows) == 100.0 and all("idle" not in row["stage"] for row in rows)


def test_answers_compare_numbers_within_the_tolerance_and_everything_else_exactly() -> None:
    from benchmarks.same_answers import differences

    first = {"score": 0.5, "label": "infected", "out_of_distribution": {"distance": 3.0, "threshold": 9.0}}
    close = {"score": 0.5 + 1e-9, "label": "infected", "out_of_distribution": {"distance": 3.0, "threshold": 9.0}}
    assert differences(first, close, 1e-6) == (pytest.approx(1e-9), [])
    other = {"score": 0.51, "label": "uninfected", "out_of_distribution": {"distance": 3.0, "threshold": 8.0}}
    largest, unequal = differences(first, other, 1e-6)
    assert largest == pytest.approx(0.01) and unequal == ["label", "out_of_distribution.threshold", "score"]
    assert differences(first, {**first, "warning": "x"}, 1e-6)[1] == ["warning"]


@pytest.mark.parametrize("flips", [(), ("horizontal", "vertical")], ids=["plain", "flips"])
def test_trust_in_graph_rebuilds_the_exported_analyse_and_times_every_variant(model_factory, tmp_path, flips) -> None:
    import numpy as np

    from app.contract.savedmodel import load_model
    from benchmarks import trust_in_graph

    folder = model_factory(tmp_path / "models", "malaria", flips=flips)
    graphs = trust_in_graph.variants(folder)
    batch = np.random.default_rng(0).random((3, *load_model(folder).card.input.spec().shape), dtype=np.float32)
    exported = [outputs.log_odds for outputs in graphs["exported analyse (what the service calls)"](batch)]
    rebuilt = graphs["rebuilt analyse, every feature"](batch)["log_odds"].numpy()
    np.testing.assert_allclose(rebuilt, exported, rtol=1e-4, atol=1e-5)  # the same arithmetic, so a fair baseline
    result = trust_in_graph.measure("malaria", tmp_path / "models", batch_sizes=[1, 2], rounds=1, calls=1)
    assert set(result["per_image_us"]) == {"1", "2"}
    assert set(result["per_image_us"]["2"]) == set(graphs) and all(v > 0 for v in result["per_image_us"]["2"].values())
    assert "batch 2: us/image" in trust_in_graph.markdown([result])


def test_hostile_traffic_makes_a_dicom_the_service_reads_and_small_images() -> None:
    from app.contract.dicom import dicom_decoded_bytes, read_dicom
    from benchmarks import hostile_traffic

    data = hostile_traffic.dicom_bytes(64)
    image = read_dicom(data, max_pixels=10**6)
    assert image.size == (64, 64) and image.mode == "L"
    assert dicom_decoded_bytes(data, 10**6) == 64 * 64 * (2 + 8)  # 16-bit samples and two float32 copies
    assert len(hostile_traffic.small_png()) > 0
