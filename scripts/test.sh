#!/usr/bin/env bash
# Set up (first time only) and run everything that guards the product: lint, unit and browser tests,
# and the evaluation suite with its thresholds. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False ANONYMIZED_TELEMETRY=False

echo "== lint (ruff)"
.venv/bin/ruff check bot evals tests app.py scripts

echo "== tests (pytest)"
.venv/bin/python -m pytest -q "$@"

echo "== evaluation suite, dev split (python -m evals)"
.venv/bin/python -m evals --report reports/evals

echo "== evaluation suite, stranger-written dev sets (read while tuning; a regression guard)"
.venv/bin/python -m evals --cases evals/cases/dev_strangers/answers_a.yaml evals/cases/dev_strangers/triage_a.yaml \
  --thresholds evals/cases/dev_strangers/_thresholds.yaml --report reports/evals-dev-strangers
.venv/bin/python -m evals --cases evals/cases/dev_strangers/answers_g.yaml evals/cases/dev_strangers/triage_g.yaml \
  --thresholds evals/cases/dev_strangers/_thresholds_g.yaml --report reports/evals-dev-strangers-g
.venv/bin/python -m evals --cases evals/cases/dev_strangers/answers_i.yaml evals/cases/dev_strangers/triage_i.yaml \
  --thresholds evals/cases/dev_strangers/_thresholds_i.yaml --report reports/evals-dev-strangers-i
.venv/bin/python -m evals --cases evals/cases/dev_strangers/answers_k.yaml evals/cases/dev_strangers/triage_k.yaml \
  --thresholds evals/cases/dev_strangers/_thresholds_k.yaml --report reports/evals-dev-strangers-k
.venv/bin/python -m evals --cases evals/cases/dev_strangers/answers_m.yaml evals/cases/dev_strangers/triage_m.yaml \
  --thresholds evals/cases/dev_strangers/_thresholds_m.yaml --report reports/evals-dev-strangers-m
.venv/bin/python -m evals --cases evals/cases/dev_strangers/answers_o.yaml evals/cases/dev_strangers/triage_o.yaml \
  --thresholds evals/cases/dev_strangers/_thresholds_o.yaml --report reports/evals-dev-strangers-o

echo "== evaluation suite, blind test split (held back: figures only; a regression guard)"
.venv/bin/python -m evals --blind --cases evals/cases/test --thresholds evals/cases/test/_thresholds.yaml \
  --report reports/evals-test

if [ -d ../shared/seeds ]; then
  echo "== evaluation suite on the seed news articles as the only corpus"
  .venv/bin/python -m evals --corpus ../shared/seeds --cases evals/seeds_cases \
    --thresholds evals/seeds_cases/_thresholds.yaml --report reports/evals-seeds
fi
