r"""Kernels per train step on an H100/H200, compiled on this machine without a GPU.

XLA compiles the real step (make_jax/train/step.py, state donated as the trainer does) for
a CUDA target described by `benchmarks/gpu_targets/h200.txtpb` (an H100 SXM with the H200's
memory), and `benchmarks.hlo_kernels` counts what the compiled program launches per step:
by kind (fusions, cuBLAS, cuDNN, copies) and by model component. No timing comes out: it
shows what the step becomes, to compare before and after a change.

Needs the CUDA plugin of jaxlib's version next to the project's packages (about 3.7 GB of
NVIDIA libraries from the package registry; no GPU):

  python3 -m venv /tmp/gpuvenv
  echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/gpuvenv/lib/python3.11/site-packages/make_jax.pth
  /tmp/gpuvenv/bin/pip install "jax-cuda13-plugin[with-cuda]==$(.venv/bin/python -c 'import jaxlib; print(jaxlib.__version__)')"
  /tmp/gpuvenv/bin/python -m benchmarks.gpu_kernels --config=base --batch=256 [--out=/tmp/gpu_kernels]

Backend-aware choices (the convolutions' kernel gradient, the global norm) are made as on
a GPU (`MAKE_JAX_TARGET_PLATFORM=gpu`; here the default backend is the CPU). Triton GEMMs
are off (`--xla_gpu_enable_triton_gemm=false`): without autotuning on a device their
tiling fails on some dots. About 1-3 minutes of compile for the base step on 2 cores.
"""

import argparse
import importlib
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--config', default='base')
  ap.add_argument('--batch', type=int, default=256)
  ap.add_argument('--dtype', default='bfloat16')
  ap.add_argument('--target', default=str(HERE / 'gpu_targets' / 'h200.txtpb'))
  ap.add_argument('--out', default='', help='also write the HLO text and the counts here')
  args = ap.parse_args(argv)
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_gpu_enable_triton_gemm' not in flags:
    os.environ['XLA_FLAGS'] = (flags + ' --xla_gpu_enable_triton_gemm=false').strip()
  os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
  # Backend-aware choices (conv kernel gradient, global norm) as on a GPU, not this CPU.
  os.environ['MAKE_JAX_TARGET_PLATFORM'] = 'gpu'
  sys.path.insert(0, os.getcwd())

  import jax
  from jax.experimental import topologies
  from jax.sharding import SingleDeviceSharding

  from benchmarks import hlo_kernels, step_setup
  from make_jax.models.make_model import build_model, example_batch
  from make_jax.train import flops as flops_lib
  from make_jax.train import optimizer
  from make_jax.train import state as state_lib
  from make_jax.train import step as train_step

  try:
    topology = topologies.get_topology_desc(
      platform='cuda',
      topology_name='',
      topology='1x1x1',
      target_config=pathlib.Path(args.target).read_text(),
    )
  except Exception as e:  # noqa: BLE001  (no plugin: say how to get one)
    raise SystemExit(
      f'No CUDA compiler here ({e!r}): install jax-cuda13-plugin[with-cuda] of jaxlib '
      f"{jax.__version__} (see this file's docstring)"
    ) from e
  sharding = SingleDeviceSharding(topology.devices[0])
  config = importlib.import_module(f'configs.{args.config}').get_config()
  config.data.global_batch_size = args.batch
  config.model.dtype = args.dtype
  model = build_model(config)
  tokens = step_setup.special_tokens(config.model.vocab_size)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  step = train_step.make_train_step(model, tx, config, tokens)
  abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  state = jax.eval_shape(state_lib.init_fn(model, tx, config), jax.random.key(0))
  state = jax.tree.map(abstract, state)
  raw = example_batch(config, args.batch)
  batch = {k: abstract(v) for k, v in raw.items() if k in step_setup.RAW_KEYS}
  t0 = time.time()
  traced = jax.jit(step, donate_argnums=0).trace(state, batch)
  flops = flops_lib.jaxpr_flops(traced.jaxpr)
  lowered = traced.lower(lowering_platforms=('cuda',))
  compiled = lowered.compile()
  compile_s = time.time() - t0
  text = compiled.as_text()
  counts = hlo_kernels.kernels(text)
  report = {
    'config': args.config,
    'batch': args.batch,
    'dtype': args.dtype,
    'target': pathlib.Path(args.target).name,
    'jax': jax.__version__,
    'model_gflop_per_step': flops / 1e9,
    'trace_lower_compile_s': round(compile_s, 1),
    **counts,
  }
  print(
    f'{args.config} batch {args.batch} {args.dtype}: {counts["total"]} kernels per step '
    f'({flops / 1e9:.0f} model GFLOP; compiled in {compile_s:.0f} s here)'
  )
  for title, table in (('by kind', counts['by_kind']), ('by component', counts['by_component'])):
    print(f'  {title}:')
    for name, n in table.items():
      print(f'    {n:6d}  {name}')
  if counts['while_loops']:
    print('  while loops (body kernels counted per trip):', counts['while_loops'])
  if args.out:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f'{args.config}_b{args.batch}_{args.dtype}'
    (out / f'{stem}.hlo.txt').write_text(text)
    (out / f'{stem}.json').write_text(json.dumps(report, indent=1))
  return report


if __name__ == '__main__':
  main()
