#!/usr/bin/env bash
# Set everything up (Debian's chromium for the browser tests, .venv with the test extras) and run the whole
# test suite (real-data checks skip where ../shared is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system_packages.sh
scripts/setup.sh test
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"
