"""Shared set-up of the trainer tests: the tiny config on synthetic en_small, made cheap.

One layer per encoder (every module still runs), CDNS from step 0 (before CDNS a device's
in-batch negatives are its own rows, so sharded runs only equal one device with CDNS on),
the dataset built once per test session and one vocabulary learned once and reused. The
schedule stays the tiny config's 300 steps; runs stop early (`stop_at`).
"""

import pathlib

import numpy as np

from configs import tiny
from make_jax.datasets import loading
from make_jax.train import inputs, loop

# The logged terms two runs of the same training must agree on, step by step.
TERMS = ('loss', 'qpm', 'qpc', 'mlm', 'mpm_r', 'qpm_accuracy', 'qpm_negatives_bank')


def tiny_config(data_dir: str | pathlib.Path, vocab_path: str | pathlib.Path = ''):
  """configs/tiny.py made cheaper for tests (see the module docstring)."""
  c = tiny.get_config()
  c.data.data_dir = str(data_dir)
  c.text.vocab_path = str(vocab_path)
  c.model.num_layers = 1
  c.model.image_num_layers = 1
  c.loss.cdns_start_fraction = 0.0
  c.train.log_every = 1
  c.train.checkpoint_every = 1000
  c.train.eval_every = 0
  return c


def prepare(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """(TFDS data_dir with en_small built, a learned vocab.txt), shared by a test session."""
  base = tmp_path_factory.getbasetemp()
  data_dir = base / 'tfds'
  builder = loading.prepare('synthetic_products', 'en_small', data_dir)
  vocab_dir = base / 'trainer_vocab'
  vocab_dir.mkdir(exist_ok=True)
  if not (vocab_dir / 'vocab.txt').exists():
    inputs.load_preprocessor(tiny_config(data_dir), builder, vocab_dir)
  return data_dir, vocab_dir / 'vocab.txt'


def run_layout(config, workdir, parallelism: str, param_sharding: str, steps: int) -> list[dict]:
  """`steps` steps of `config` in one layout (`workdir/<layout>`): the per-step history."""
  config.parallelism, config.param_sharding = parallelism, param_sharding
  out = loop.train_and_evaluate(config, workdir / f'{parallelism}_{param_sharding}', stop_at=steps)
  assert [h['step'] for h in out['history']] == list(range(1, steps + 1))
  return out['history']


def assert_histories_equal(got: list[dict], want: list[dict], rtol: float) -> float:
  """Every step's `TERMS` equal to `rtol`; returns the largest relative difference seen."""
  worst = 0.0
  for g, w in zip(got, want, strict=True):
    for k in TERMS:
      np.testing.assert_allclose(g[k], w[k], rtol=rtol, err_msg=f'step {w["step"]} {k}')
      worst = max(worst, abs(g[k] - w[k]) / max(abs(w[k]), 1e-30))
  return worst


ROOT = pathlib.Path(__file__).resolve().parent.parent


def rtol(step: int) -> float:
  """Relative tolerance between two layouts' losses at `step` of the tiny config.

  Measured (float32, CPU): the layouts add the same terms in other orders (per-device
  partial sums, psums, gloo across processes), and Adam turns the rounding of near-cancelling
  gradient sums into full-size steps, so runs drift apart like any chaotic float computation:
  steps 1-8 agreed within 5e-6 (pmap, pjit, pjit FSDP vs single; two processes vs one); with
  MLM logits gathered at the predicted positions the pmap loss reached 1.06e-5 at step 8, and
  compiled at XLA's CPU optimisation level 0 (tests/conftest.py) two processes reached
  1.28e-5 at step 6, so 1e-5 is held to step 4; then
  MPM_R (logits / tau = 0.1, the sharpest term) drifts, up to 1.3e-3 by step 20. A gradient
  off by the device count, a missing cross-device term or a wrong data split shows at step 1
  at the 1e-1 level. The drift is rounding, not a difference in what is computed: in float64
  (tests/test_trainer_layouts_float64.py) pmap, pjit and pjit FSDP stay within 6.1e-15 of
  'single' over all 20 steps.
  """
  return 1e-5 if step <= 4 else 3e-3


def train_flags(data_dir, vocab_path, **train) -> list[str]:
  """`tools.train` flags giving `tiny_config(data_dir, vocab_path)` (+ train.* overrides)."""
  flags = [
    '--config=configs/tiny.py',
    f'--config.data.data_dir={data_dir}',
    f'--config.text.vocab_path={vocab_path}',
    '--config.model.num_layers=1',
    '--config.model.image_num_layers=1',
    '--config.loss.cdns_start_fraction=0.0',
    '--config.train.log_every=1',
    '--config.train.checkpoint_every=1000',
    '--config.train.eval_every=0',
  ]
  return flags + [f'--config.train.{k}={v}' for k, v in train.items()]


def trainer_env(devices: int) -> dict[str, str]:
  """Environment of a trainer subprocess with `devices` fake CPU devices."""
  import os

  env = dict(os.environ)
  # The test process's other XLA flags (conftest's optimisation level) carry over, so a
  # subprocess compiles exactly as the in-process runs it is compared with.
  kept = [
    f for f in env.get('XLA_FLAGS', '').split() if 'xla_force_host_platform_device_count' not in f
  ]
  env['XLA_FLAGS'] = ' '.join([f'--xla_force_host_platform_device_count={devices}', *kept])
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = str(ROOT)
  return env


def read_metrics(workdir: pathlib.Path) -> dict[int, dict]:
  """{step: metrics} from `<workdir>/metrics.jsonl` (a later line for a step wins)."""
  import json

  out = {}
  for line in (workdir / 'metrics.jsonl').read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      if 'loss' in record:
        out[int(record['step'])] = record
  return out
