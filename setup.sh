#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv with every pinned dependency.
# Usage: bash setup.sh [--fresh] [--gpu]   (--fresh deletes .venv first; --gpu adds the CUDA
# 13 plugin of the pinned jaxlib, requirements-gpu.txt, for one or more NVIDIA GPUs)
# As root with apt-get it also installs Debian's chromium + chromium-driver when missing (the
# page test drives them; MAKE_SKIP_CHROMIUM=1 skips this).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
GPU=0
for arg in "$@"; do
  case "$arg" in
    --fresh) rm -rf .venv ;;
    --gpu) GPU=1 ;;
    *) echo "setup.sh: unknown argument $arg (use --fresh, --gpu)" >&2; exit 2 ;;
  esac
done
if [[ ! -x .venv/bin/python ]]; then "$PY" -m venv .venv; fi
# uv installs the same pinned set as pip (checked: identical `pip freeze`) in about a quarter
# of the time (59 s against ~240 s for a fresh venv here); pip is the fallback.
# uv does not read pip's configuration: the local wheels (torch's CPU build) are passed on.
UV=0.13.9
LINKS=${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}
install() {  # install [pip args...]: through uv when it is available, else pip.
  if [[ -x .venv/bin/uv ]] && .venv/bin/uv pip install --python .venv/bin/python --quiet \
      ${LINKS:+--find-links "$LINKS"} "$@"; then
    return 0
  fi
  .venv/bin/python -m pip install --quiet "$@"
}
.venv/bin/python -m pip install --quiet "uv==$UV" || echo "setup.sh: uv unavailable, using pip"
install -r requirements.txt -r requirements-test.txt
# Declared dependencies of these are not used (see the file's comment).
install --no-deps -r requirements-nodeps.txt
if [[ $GPU == 1 ]]; then
  install -r requirements-gpu.txt
fi
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
