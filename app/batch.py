"""`medscan predict PATH... --disease D`: score files and folders (images and DICOM, recursively) with a progress
bar, several at a time, into a CSV or JSON-lines table that a second run resumes; against a running service
(`--url`) or with the models loaded in this process. Each file's answer is `/predict`'s, or its error's reason."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

# One file -> (its /predict answer, None) or (None, its error as /predict gives it: status, code, message).
Scorer = Callable[[Path], Awaitable[tuple[dict[str, Any] | None, dict[str, Any] | None]]]
COLUMNS = ["path", "label", "score", "threshold", "in_distribution", "warning", "model_version", "status", "error"]
HIDDEN = (".", "_")  # hidden files and folders (.DS_Store, __MACOSX) are not images of the study


def files_under(paths: list[Path]) -> Iterator[Path]:
    """Every file named, and every file under each folder named, in a stable order."""
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                parts = found.relative_to(path).parts
                if found.is_file() and not any(part.startswith(HIDDEN) for part in parts):
                    yield found
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def already_scored(out: Path) -> set[str]:
    """The paths a previous run wrote into `out` (a resumed run skips them)."""
    if not out.is_file():
        return set()
    with out.open(encoding="utf-8", newline="") as table:
        if out.suffix == ".csv":
            return {row["path"] for row in csv.DictReader(table) if row.get("path")}
        done = set()
        for line in table:
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a stop: that file is scored again
        return done


def row_of(path: Path, answer: dict[str, Any] | None, error: dict[str, Any] | None) -> dict[str, Any]:
    if answer is None:
        assert error is not None
        return {"path": str(path), "status": error["status"], "error": f"{error['code']}: {error['message']}"}
    return {"path": str(path), "status": 200, **{key: answer.get(key) for key in COLUMNS if key in answer}}


class ResultsTable:
    """Rows appended and flushed one by one, so that a stop loses at most the row being written."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self._file = None if out is None else out.open("a", encoding="utf-8", newline="")
        self._csv = None
        if self._file is not None and out is not None and out.suffix == ".csv":
            self._csv = csv.DictWriter(self._file, COLUMNS, extrasaction="ignore")
            if out.stat().st_size == 0:
                self._csv.writeheader()

    def write(self, row: dict[str, Any], answer: dict[str, Any] | None) -> None:
        if self._file is None:
            return
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._file.write(json.dumps({**(answer or {}), **row}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class Summary:
    labels: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0

    def add(self, row: dict[str, Any]) -> None:
        if row.get("error"):
            self.failures.append((row["path"], row["error"]))
            return
        self.labels[row["label"]] += 1
        if row.get("warning"):
            self.warnings[str(row["warning"]).split(" (")[0].split(":")[0]] += 1  # the kind, not its figures

    def text(self) -> str:
        lines = [
            f"answered: {sum(self.labels.values())} ({', '.join(f'{k} {v}' for k, v in sorted(self.labels.items()))})"
        ]
        lines += [f"skipped (already in the table): {self.skipped}"] if self.skipped else []
        lines += [f"warned: {n} x {warning}" for warning, n in self.warnings.most_common()]
        lines.append(f"failed: {len(self.failures)}")
        lines += [f"  {path}: {reason}" for path, reason in self.failures[:20]]
        lines += [f"  ... and {len(self.failures) - 20} more (see the table)"] if len(self.failures) > 20 else []
        return "\n".join(lines)


async def score_all(files: list[Path], score: Scorer, table: ResultsTable, concurrency: int, progress: tqdm) -> Summary:
    """Every file scored, `concurrency` at a time; each row written as soon as it is answered."""
    summary = Summary()
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for path in files:
        queue.put_nowait(path)

    async def worker() -> None:
        while not queue.empty():
            path = queue.get_nowait()
            answer, error = await score(path)
            row = row_of(path, answer, error)
            table.write(row, answer)
            summary.add(row)
            progress.update(1)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return summary


def remote_scorer(url: str, disease: str, api_key: str | None, timeout_s: float) -> tuple[Scorer, Callable]:
    """Files posted to a running service's /predict/<disease> as raw bodies; 503s retried after Retry-After."""
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def score(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        body = path.read_bytes()
        for _ in range(10):
            response = await client.post(f"/predict/{disease}", content=body, headers={"Content-Type": _media(body)})
            if response.status_code != 503 or "Retry-After" not in response.headers:
                break
            await asyncio.sleep(float(response.headers["Retry-After"]))
        if response.status_code == 200:
            return response.json(), None
        try:
            return None, response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return None, {"status": response.status_code, "code": "http_error", "message": response.text[:200]}

    return score, client.aclose


def _media(body: bytes) -> str:
    """A raw body's type: DICOM by its marker, else any image (the service reads the format itself)."""
    from app.contract.dicom import looks_like_dicom

    return "application/dicom" if looks_like_dicom(body) else "image/*"


def local_scorer(models_dir: Path | None, disease: str) -> tuple[Scorer, Callable]:
    """The models loaded in this process, behind the same pipeline and answer as /predict."""
    from app.api.errors import error_detail
    from app.api.routes.predict import answer
    from app.runtime.inference import InferencePipeline, Upload
    from app.runtime.modality_check import load_or_warn
    from app.runtime.registry import ModelRegistry
    from app.settings import get_settings

    settings = get_settings()
    if models_dir is not None:
        settings = settings.model_copy(update={"models_dir": models_dir})
    registry = ModelRegistry(settings)
    state: dict[str, InferencePipeline] = {}

    async def score(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if "pipeline" not in state:
            modality = await asyncio.to_thread(load_or_warn, settings.models_dir) if settings.modality_check else None
            state["pipeline"] = InferencePipeline(registry, settings, None, modality)
            await registry.load_all()
            state["pipeline"].budget.limit_bytes = settings.decode_memory_bytes()
        try:
            (outcome,) = await state["pipeline"].screen(disease, [Upload(path.read_bytes(), filename=path.name)])
            if isinstance(outcome, Exception):
                raise outcome
        except Exception as error:  # noqa: BLE001 - a domain error is the file's answer; others are reported
            try:
                return None, error_detail(error).model_dump()
            except KeyError:
                return None, {"status": 500, "code": "internal_error", "message": repr(error)}
        return answer(outcome), None

    return score, registry.close


def parse_args(argv: list[str] | None) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="medscan predict", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="files and folders (searched recursively)")
    parser.add_argument("--disease", required=True)
    parser.add_argument("--url", default=None, help="a running service (default: load the models in this process)")
    parser.add_argument(
        "--models", type=Path, default=None, help="in-process: the models folder (default: MEDSCAN_MODELS_DIR)"
    )
    parser.add_argument("--api-key", default=None, help="with --url, for a service that asks for one")
    parser.add_argument("--concurrency", type=int, default=4, help="files in flight at once (default: 4)")
    parser.add_argument("--out", type=Path, default=None, help="results table, .csv or .jsonl; resumed if it exists")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request, with --url")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out is not None and args.out.suffix not in (".csv", ".jsonl"):
        print("medscan predict: --out must end in .csv or .jsonl", file=sys.stderr)
        return 2
    try:
        files = list(files_under(args.paths))
    except FileNotFoundError as error:
        print(f"medscan predict: {error}", file=sys.stderr)
        return 2
    done = already_scored(args.out) if args.out else set()
    todo = [path for path in files if str(path) not in done]
    from app.settings import InvalidSettings

    try:
        score, close = (
            remote_scorer(args.url, args.disease, args.api_key, args.timeout)
            if args.url
            else local_scorer(args.models, args.disease)
        )
    except InvalidSettings as error:
        print(f"medscan predict: {error}", file=sys.stderr)
        return 2
    table = ResultsTable(args.out)
    progress = tqdm(total=len(todo), unit="file", desc=args.disease, file=sys.stderr)
    try:
        summary = asyncio.run(_run(todo, score, close, table, args.concurrency, progress))
    except KeyboardInterrupt:
        progress.close()
        print(f"\nstopped; {args.out or 'nothing'} keeps every row written: run again to resume", file=sys.stderr)
        return 130
    finally:
        table.close()
    progress.close()
    summary.skipped = len(files) - len(todo)
    print(summary.text())
    return 0  # a file that could not be answered is a row with its reason, not a failed run


async def _run(
    todo: list[Path], score: Scorer, close: Callable, table: ResultsTable, concurrency: int, progress: tqdm
) -> Summary:
    """Score until done or Ctrl-C: then the workers stop where they are (each row already written stays), the
    models are released, and KeyboardInterrupt tells the caller."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    work = asyncio.create_task(score_all(todo, score, table, concurrency, progress))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        work.cancel()
    else:
        stopped.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    await close()
    if stop.is_set():
        raise KeyboardInterrupt
    return work.result()
