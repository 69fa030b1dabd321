#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv with every pinned dependency.
# Usage: bash setup.sh [--fresh]     (--fresh deletes .venv first)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--fresh" ]]; then rm -rf .venv; fi
if [[ ! -x .venv/bin/python ]]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
# Declared dependencies of these are not used (see the file's comment).
.venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
.venv/bin/python -c "import jax, flax, tensorflow_datasets, scann, jieba, tokenizers; print('environment ready: jax', jax.__version__)"
