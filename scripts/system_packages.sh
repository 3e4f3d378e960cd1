#!/usr/bin/env bash
# Debian packages the tests need: Chromium for the web page's browser tests (Playwright drives it through
# executable_path; no browser download), and Orthanc with its DICOMweb plugin, the real PACS of the PACS tests.
# Installs only what is missing, and only where it can (root or sudo).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
[ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "scripts/system_packages.sh: not root and no sudo: install Debian's ${missing[*]} yourself, or their tests skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d or not, the tests start their own Orthanc: the packaged service is not needed
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
