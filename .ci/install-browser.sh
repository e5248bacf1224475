#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian, for tests/test_mlflow_ui.py (Selenium).
# Debian's packages, not Selenium Manager / Playwright downloads: CI has no internet beyond the
# package registries. Idempotent: does nothing when both binaries are already there.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "install-browser: chromium and chromedriver already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver
