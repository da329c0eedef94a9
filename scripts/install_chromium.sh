#!/usr/bin/env bash
# Install Debian's Chromium for the headless report check (tests/test_run_report.py skips without it).
# Needs root (or sudo) and the Debian package mirror; does nothing when Chromium is already there.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
