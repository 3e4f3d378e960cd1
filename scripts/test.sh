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
# Two processes on 2 cores (pytest-xdist; a file's tests stay together, so module fixtures are made once): the
# full suite took 16.5 min in one process and 9 min in two (an earlier, smaller suite); three processes measured no
# faster than two (12.7 against 12.5 min, 2026-12-06). The 25 slowest tests are listed at the end.
# A process that dies (killed, or ended by faulthandler_timeout) is not replaced: with --dist loadfile a replaced one
# can wait forever for work (pytest-xdist #784, #1323; seen in CI on 2026-12-07, held until CI's limit), so the run
# stops and reports the test instead.
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider -n "${MEDSCAN_TEST_PROCESSES:-auto}" --dist loadfile \
  --max-worker-restart=0 --durations=25 "$@"
