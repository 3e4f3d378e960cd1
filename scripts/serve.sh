#!/usr/bin/env bash
# Set everything up and serve the shipped models on http://localhost:8000 (settings: MEDSCAN_* variables).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/medscan serve "$@"
