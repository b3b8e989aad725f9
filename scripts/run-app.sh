#!/usr/bin/env bash
# Set up (first time only) and start the family chat on http://127.0.0.1:7860 (BOT_HOST / BOT_PORT to change).
# The first start builds the search index from knowledge/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
