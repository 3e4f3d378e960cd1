#!/usr/bin/env bash
# Set everything up (Debian's chromium for the browser tests, .venv with the test extras) and run the whole
# test suite (real-data checks skip where ../shared is absent). `--quick`: only the tests not marked slow.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system_packages.sh
scripts/setup.sh test
if [ "${1:-}" = "--quick" ]; then
  shift
  set -- -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"
