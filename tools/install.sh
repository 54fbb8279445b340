#!/usr/bin/env bash
# Install contimg with its test dependencies, and the Debian packages the tests drive when they
# are missing: chromium (browser tests) and wsclean (Measurement Set interop test). Run from
# anywhere; uses sudo for apt when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing+=(chromium)
fi
command -v wsclean >/dev/null 2>&1 || missing+=(wsclean)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing Debian's ${missing[*]} for the tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python -m pip install --quiet --disable-pip-version-check -e '.[test]'
