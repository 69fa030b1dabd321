r"""Times the train step of another source tree (an older commit) on request, for side-by-side runs.

  python benchmarks/baseline_worker.py --src=/tmp/tree_at_rev --config=base --batch_size=32

Started by `bench_model --baseline_rev=REV` on an export of REV (`git archive`): `make_jax`
and `configs` are imported from `--src`, while the step builder (`benchmarks/step_setup.py`)
and the FLOP counter (`make_jax/train/flops.py`) are loaded from *this* file's tree, so both
sides count FLOPs the same way. Protocol, one JSON object per line on stdout:
`{"ready": ..., "model_flops": F, "xla_flops": X}` once compiled and warm; then for each
line `run N` on stdin it runs N steps and answers `{"seconds": per_step}`; `quit` ends it.
"""

import argparse
import importlib.util
import json
import pathlib
import sys
import time

_HERE = pathlib.Path(__file__).resolve().parent


def _load(name: str, path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def main() -> None:
  """Builds the step of `--src`, reports its FLOPs, then serves `run N` requests."""
  parser = argparse.ArgumentParser()
  parser.add_argument('--src', required=True, help='Source tree whose make_jax is timed.')
  parser.add_argument('--config', default='base')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--compilation_cache', default='')
  args = parser.parse_args()
  sys.path.insert(0, str(pathlib.Path(args.src).resolve()))
  import jax  # noqa: PLC0415  (after sys.path points at --src)

  if args.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', args.compilation_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  flops = _load('bench_flops', _HERE.parent / 'make_jax' / 'train' / 'flops.py')
  setup = _load('bench_step_setup', _HERE / 'step_setup.py').build(args.config, args.batch_size)
  traced = setup.train.trace(setup.state, setup.batch)
  model = flops.jaxpr_flops(traced.jaxpr)
  compiled = traced.lower().compile()
  jax.block_until_ready(compiled(setup.state, setup.batch))
  print(
    json.dumps({'ready': True, 'model_flops': model, 'xla_flops': flops.compiled_flops(compiled)}),
    flush=True,
  )
  for line in sys.stdin:
    words = line.split()
    if not words or words[0] == 'quit':
      break
    n = int(words[1])
    t = time.perf_counter()
    for _ in range(n):
      jax.block_until_ready(compiled(setup.state, setup.batch))
    print(json.dumps({'seconds': (time.perf_counter() - t) / n}), flush=True)


if __name__ == '__main__':
  main()
