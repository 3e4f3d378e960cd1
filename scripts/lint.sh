#!/usr/bin/env bash
# Lint, format, types and the docs, as CI checks them (after scripts/setup.sh test).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # app/, training/ and benchmarks/, as configured in pyproject.toml
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$(mktemp -d)"
