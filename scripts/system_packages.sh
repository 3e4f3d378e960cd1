#!/usr/bin/env bash
# Debian packages the tests need: Chromium for the web page's browser tests (Playwright drives it through
# executable_path; no browser download). Installs only what is missing, and only where it can (root or sudo).
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "scripts/system_packages.sh: not root and no sudo: install Debian's chromium yourself, or the browser tests skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
