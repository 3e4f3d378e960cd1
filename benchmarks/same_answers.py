"""Do two running services answer alike? Every model, a fixed set of real test-part images, as multipart uploads.

    python -m benchmarks.same_answers --data ../shared/datasets http://127.0.0.1:8021 http://127.0.0.1:8022

For a change that must not change behaviour (a faster request path): run the service before and after it side
by side and compare. Scores, distances and percentiles may differ by float rounding (within --tolerance), every
other field must be equal. Results: benchmarks/results/same_answers.json.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = ("score", "distance", "distance_percentile")


def predict(base_url: str, disease: str, image: Path) -> dict:
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.name}"\r\n\r\n'
    body = head.encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    request = urllib.request.Request(f"{base_url}/predict/{disease}", body, headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def differences(first: dict, second: dict, tolerance: float, path: str = "") -> tuple[float, list[str]]:
    """(largest difference of a number field, the other fields that differ)."""
    largest, unequal = 0.0, list[str]()
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key), second.get(key)
        where = f"{path}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            inner, found = differences(a, b, tolerance, where + ".")
            largest, unequal = max(largest, inner), unequal + found
        elif key in NUMBERS and isinstance(a, float) and isinstance(b, float):
            largest = max(largest, abs(a - b))
            if abs(a - b) > tolerance:
                unequal.append(where)
        elif a != b:
            unequal.append(where)
    return largest, unequal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--per-model", type=int, default=25)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    from training.data.config import disease_samples
    from training.data.samples import split_by_group

    with urllib.request.urlopen(f"{args.first}/models", timeout=30) as response:
        diseases = [m["disease"] for m in json.load(response)["models"] if m["status"] == "ready"]
    report: dict = {"tolerance": args.tolerance, "models": {}}
    for disease in diseases:
        test = split_by_group(disease_samples(args.data, disease)).test
        images = test[:: max(1, len(test) // args.per_model)][: args.per_model]
        largest, unequal = 0.0, list[str]()
        for sample in images:
            found, fields = differences(
                predict(args.first, disease, sample.path), predict(args.second, disease, sample.path), args.tolerance
            )
            largest = max(largest, found)
            unequal += [f"{sample.path.name}: {field}" for field in fields]
        report["models"][disease] = {"images": len(images), "largest_number_difference": largest, "unequal": unequal}
        print(disease, report["models"][disease], flush=True)
    report["same"] = not any(m["unequal"] for m in report["models"].values())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "same_answers.json").write_text(json.dumps(report, indent=2) + "\n")
    print("same answers" if report["same"] else "ANSWERS DIFFER")


if __name__ == "__main__":
    main()
