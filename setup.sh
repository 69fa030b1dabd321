#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv with every pinned dependency.
# Usage: bash setup.sh [--fresh]     (--fresh deletes .venv first)
# As root with apt-get it also installs Debian's chromium + chromium-driver when missing (the
# page test drives them; MAKE_SKIP_CHROMIUM=1 skips this).
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
# Headless Chromium for tests/test_page_chromium.py: Debian's packages, never a downloaded build.
if [[ -z "${MAKE_SKIP_CHROMIUM:-}" ]] && ! { [[ -x /usr/bin/chromium ]] && [[ -x /usr/bin/chromedriver ]]; }; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    if log=$( { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver; } 2>&1); then
      echo "chromium ready: $(/usr/bin/chromedriver --version | cut -d' ' -f1-2)"
    else
      echo "setup.sh: apt-get could not install chromium chromium-driver (the page test will" \
        "skip, or fail under CI):"
      echo "$log" | tail -n 5
    fi
  else
    echo "setup.sh: chromium/chromium-driver missing and not root with apt-get: the page test" \
      "will skip (install them: apt-get install chromium chromium-driver)"
  fi
fi
