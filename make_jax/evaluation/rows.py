"""The rows of the results table (`results.py` runs them): what each trains and from where.

Config fields are those of configs/base.py; each row changes only its own (`overrides`),
from configs/results.py (the from-scratch ablations) or configs/finetune.py (the pretrained
section). `results.py`'s docstring says what every row is.
"""

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

from make_jax.serving import filters

_MAKE = {
  'loss.weights.mlm': 1.0,
  'loss.weights.mpm': 1.0,
  'loss.weights.mpm_r': 0.0,
  'loss.weights.qpm': 1.0,
  'loss.weights.qpc': 1.0,
  'loss.cdns_start_fraction': 1.0,
  'loss.bank_batches': 0,  # No MBNS: the state carries no queue.
}
_TWO_TOWER = {
  'model.product_image': False,
  'loss.weights.mlm': 0.0,
  'loss.weights.mpm': 0.0,
  'loss.weights.mpm_r': 0.0,
  'loss.weights.qpm': 1.0,
  'loss.weights.qpc': 0.0,
  'loss.cdns_start_fraction': 1.0,
  'loss.bank_batches': 0,
}
# The queue counts from half-way, like CDNS: counted from step 0, a randomly initialised
# encoder collapses every batch's products to one point that drifts from step to step, so the
# queued (older) points are told apart from the current ones by age, not content (the paper
# starts from a pretrained BERT, whose embeddings are diverse from the first step).
_MBNS = {'loss.w_mbns': 0.25, 'loss.bank_batches': 8, 'loss.bank_start_fraction': 0.5}


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the results table."""

  name: str  # Key (file names, --rows).
  label: str  # As the table shows it.
  kind: str  # 'bm25' | 'minilm' | 'trained' | 'served' | 'pending'.
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  note: str = ''  # Why a 'pending' row cannot run yet.
  relevance_mode: str = filters.DEFAULT_MODE  # 'served' rows: `filters.MODES`.
  # Trained rows: the config they start from ('results': configs/results.py, the
  # from-scratch ablations; 'finetune': configs/finetune.py) and their pretrained start.
  config: str = 'results'
  init_from: str = ''
  # Trained rows: True trains one run per scored builder config on that config's own train
  # split (`row_workdir`), so a hide_colour row learns from titles that hide colours as its
  # test titles do; False trains once on default's train split and scores it everywhere.
  per_config: bool = False
  # With per_config: further overrides for one builder config's run, each chosen on that
  # config's validation split (e.g. {'hide_colour': {'loss.weights.qpm_image': 1.0}}).
  config_overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

  def overrides_for(self, builder_config: str) -> dict[str, Any]:
    """The row's overrides for its run on `builder_config`."""
    return {**self.overrides, **self.config_overrides.get(builder_config, {})}


# The pretrained section: configs/finetune.py from the packaged all-MiniLM-L6-v2. One device,
# so every query's in-batch negatives are the whole global batch (what CDNS gives on many).
_FROM_MINILM = {'config': 'finetune', 'init_from': 'minilm', 'per_config': True}

ROWS = (
  Row('bm25', 'BM25 (titles)', 'bm25'),
  Row('minilm', 'all-MiniLM-L6-v2, untrained', 'minilm'),
  Row(
    'minilm_two_tower_text',
    'Two-tower, text only, from MiniLM',
    'trained',
    {'model.product_image': False, 'loss.weights.qpc': 0.0},
    **_FROM_MINILM,
  ),
  Row('minilm_make', 'MAKE from MiniLM', 'trained', {}, **_FROM_MINILM),
  Row(
    'minilm_make_mbns',
    'MAKE from MiniLM + MBNS',
    'trained',
    {'loss.w_mbns': 0.25, 'loss.bank_batches': 8, 'loss.bank_start_fraction': 0.0},
    **_FROM_MINILM,
  ),
  Row('two_tower_text', 'Two-tower, text only, in-batch negatives', 'trained', _TWO_TOWER),
  Row('make', 'MAKE', 'trained', _MAKE),
  Row('make_cdns', 'MAKE + CDNS', 'trained', _MAKE | {'loss.cdns_start_fraction': 0.5}),
  Row('make_mbns', 'MAKE + MBNS', 'trained', _MAKE | _MBNS),
  Row(
    'make_mpm_r',
    'MAKE + MPM_R',
    'trained',
    _MAKE | {'loss.weights.mpm': 0.0, 'loss.weights.mpm_r': 1.0},
  ),
  Row(
    'make_all',
    'MAKE + CDNS + MBNS + MPM_R',
    'trained',
    _MAKE
    | {
      'loss.cdns_start_fraction': 0.5,
      **_MBNS,
      'loss.weights.mpm': 0.0,
      'loss.weights.mpm_r': 1.0,
    },
  ),
  Row(
    'best_relevance_control',
    'Best row + relevance control (strict)',
    'served',
    relevance_mode=filters.STRICT,
  ),
  Row(
    'best_relevance_backfill',
    'Best row + relevance control (backfill)',
    'served',
    relevance_mode=filters.BACKFILL,
  ),
)
ROW_NAMES = tuple(r.name for r in ROWS)
TRAINED_ROWS = tuple(r.name for r in ROWS if r.kind == 'trained')
BY_NAME = {r.name: r for r in ROWS}


def row_workdir(out_dir: str | pathlib.Path, row: Row, builder_config: str) -> pathlib.Path:
  """Where a trained row's run for `builder_config` lives: `<out>/runs/<row>`, or with
  `row.per_config` and a config other than 'default' `<out>/runs/<row>@<config>`."""
  name = row.name
  if row.per_config and builder_config != 'default':
    name = f'{row.name}@{builder_config}'
  return pathlib.Path(out_dir) / 'runs' / name


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-key overrides (`loss.weights.mpm`); unknown keys fail."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *path, leaf = key.split('.')
    node = config
    for part in path:
      node = node[part]
    if leaf not in node:
      raise KeyError(f'config has no field {key!r}')
    node[leaf] = value
  return config
