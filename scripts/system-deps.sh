#!/usr/bin/env bash
# Installs the Debian packages the tests need (PostgreSQL server, kubectl, Chromium) when they are missing.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# kubectl for the emulator tests (Debian bookworm ships 1.20 as kubernetes-client; a newer one on PATH is kept)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
# Chromium and its driver for the UI plugin's browser tests
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
