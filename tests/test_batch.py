"""`medscan predict`: folders scored into a table that matches /predict, bad files each with their reason,
a stopped run resumed without scoring a file twice."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest

from app import batch, cli
from tests.images import blob, gradient, image_bytes


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "slide"
    (root / "day2").mkdir(parents=True)
    for index in range(6):
        (root / f"cell{index}.png").write_bytes(image_bytes(blob(40, index % 2 == 0, index)))
    (root / "day2" / "wide.jpg").write_bytes(image_bytes(gradient(90, 60), "JPEG"))
    (root / "day2" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    return root


def rows(out: Path) -> list[dict]:
    with out.open(newline="") as table:
        return list(csv.DictReader(table)) if out.suffix == ".csv" else [json.loads(line) for line in table]


def test_a_folder_is_scored_recursively_into_a_table_matching_predict(
    client, served_models_dir, folder, capsys
) -> None:
    out = folder.parent / "results.csv"
    code = cli.main(["predict", str(folder), "--disease", "malaria", "--models", str(served_models_dir),
                     "--out", str(out), "--concurrency", "3"])  # fmt: skip
    assert code == 0
    table = {Path(row["path"]).name: row for row in rows(out)}
    assert set(table) == {f"cell{i}.png" for i in range(6)} | {"wide.jpg", "notes.txt"}  # hidden files left out
    for name in ("cell0.png", "wide.jpg"):
        answer = client.post("/predict/malaria", files={"file": (name, (folder.rglob(name).__next__()).read_bytes())})
        assert float(table[name]["score"]) == pytest.approx(answer.json()["score"], abs=1e-12)
        assert table[name]["label"] == answer.json()["label"] and table[name]["status"] == "200"
    assert table["notes.txt"]["status"] == "415" and "not an image" in table["notes.txt"]["error"]
    summary = capsys.readouterr().out
    assert "answered: 7" in summary and "failed: 1" in summary and "notes.txt: unsupported_media_type" in summary


def test_a_stopped_run_resumes_without_scoring_a_file_twice(served_models_dir, folder, monkeypatch) -> None:
    out = folder.parent / "results.jsonl"
    real = batch.local_scorer
    scored: list[str] = []

    def stopping_scorer(models, disease):
        score, close = real(models, disease)

        async def stop_after_three(path):
            scored.append(path.name)
            if len(scored) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C mid-way
            return await score(path)

        return stop_after_three, close

    monkeypatch.setattr(batch, "local_scorer", stopping_scorer)
    arguments = ["predict", str(folder), "--disease", "malaria", "--models", str(served_models_dir), "--out", str(out),
                 "--concurrency", "1"]  # fmt: skip
    assert cli.main(arguments) == 130
    first = [row["path"] for row in rows(out)]
    assert 1 <= len(first) < 8
    monkeypatch.setattr(batch, "local_scorer", real)
    assert cli.main(arguments) == 0
    every = [row["path"] for row in rows(out)]
    assert len(every) == len(set(every)) == 8 and every[: len(first)] == first
    assert all("label" in row or "error" in row for row in rows(out))


def test_against_a_running_service(trust_models, folder) -> None:
    from app.main import create_app
    from app.settings import Settings
    from tests.live_server import live_server

    with live_server(create_app(Settings(models_dir=trust_models))) as url:
        code = cli.main(["predict", str(folder / "cell0.png"), str(folder / "day2"), "--disease", "malaria",
                         "--url", url, "--out", str(folder.parent / "remote.csv")])  # fmt: skip
    assert code == 0
    table = rows(folder.parent / "remote.csv")
    by_name = {Path(r["path"]).name: r for r in table}  # in the order answered
    assert sorted(by_name) == ["cell0.png", "notes.txt", "wide.jpg"]
    assert by_name["cell0.png"]["label"] in ("infected", "uninfected") and by_name["notes.txt"]["status"] == "415"


def test_bad_arguments_are_refused_with_a_reason(folder, capsys) -> None:
    assert cli.main(["predict", str(folder / "missing"), "--disease", "malaria"]) == 2
    assert cli.main(["predict", str(folder), "--disease", "malaria", "--out", "x.xlsx"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
