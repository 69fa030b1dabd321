#!/usr/bin/env bash
# Fetches, into .whl/ (ignored by git), the wheels the device check needs beyond what a bare
# accelerator image carries (JAX with CUDA, flax, optax, orbax, numpy, pillow, tokenizers,
# safetensors, absl-py, PyYAML): ml-collections, at the version requirements.txt pins.
# Then, on that machine, with .whl carried along:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#     PYTHONPATH=/tmp/site python3 -m benchmarks.device_check --out=$OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
version=$(sed -n 's/^ml-collections==//p' requirements.txt)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation py -d .whl "ml-collections==$version"
ls -l .whl
