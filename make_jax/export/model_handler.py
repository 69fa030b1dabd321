"""The Beam `ModelHandler` that serves one tower of `MakeModel` to `RunInference`.

Why: Beam's `RunInference` batches elements and calls a model handler, which loads the model
once per worker. Ours loads params through a loader it is given (a trainer checkpoint, or a
random model in tests) and encodes with `retrieval.tower.TowerEncoder` (one tower jitted
at one batch size, short batches padded, several devices sharding each batch), the same
encoder the in-training evaluator and the demo searcher use.
"""

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from make_jax import rundir
from make_jax.models import make_model
from make_jax.retrieval import tower as tower_lib

ParamsLoader = Callable[[], tuple[Any, int | None]]


def random_params(config: ml_collections.ConfigDict, seed: int = 0) -> tuple[Any, None]:
  """A randomly initialised model's params (step None): stands in until checkpoints exist.

  Cached per process by (config, seed): the driver and the workers of a local pipeline
  share one initialisation.
  """
  return _random_params(config.to_json(), seed), None


@functools.lru_cache(maxsize=4)
def _random_params(config_json: str, seed: int) -> Any:
  config = ml_collections.ConfigDict(json.loads(config_json))
  model = make_model.build_model(config)
  params = make_model.init_params(model, jax.random.key(seed), make_model.example_batch(config, 1))
  return jax.device_get(params)


def make_loader(
  config: ml_collections.ConfigDict, checkpoint: str = '', seed: int = 0
) -> ParamsLoader:
  """A picklable loader: the newest intact checkpoint under `checkpoint` (a workdir or a
  checkpoint directory; its own metadata gives the params' shapes), or a random model of
  `config` if it is ''."""
  if checkpoint:
    return functools.partial(rundir.latest_params, checkpoint)
  return functools.partial(random_params, config, seed)


class MakeModelHandler(ModelHandler):
  """`RunInference` handler: dict elements in, the same dicts with the embedding out.

  An element holds the tower's inputs (contract 2 names) and any other fields (ids, counts),
  which pass through; inputs are dropped from the output and `embedding` (and, for the
  product tower, `modal_weights` = (a_title, a_image)) added.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    loader: ParamsLoader,
    *,
    tower: str,
    batch_size: int = 64,
    num_devices: int = 1,
    log_every_s: float = 10.0,
  ):
    """See `retrieval.tower.TowerEncoder`; `num_devices` local devices shard each batch."""
    super().__init__()
    self._config, self._loader, self._tower = config, loader, tower
    self._batch_size, self._num_devices, self._log_every_s = batch_size, num_devices, log_every_s
    self._count, self._start, self._last_log = 0, 0.0, 0.0

  def load_model(self) -> tower_lib.TowerEncoder:
    """Loads params through the loader and builds the jitted encoder."""
    params, step = self._loader()
    devices = jax.local_devices()
    if self._num_devices > len(devices):
      raise ValueError(f'num_devices {self._num_devices} > the {len(devices)} local devices')
    logging.info('Encoder (%s tower) from checkpoint step %s', self._tower, step)
    return tower_lib.TowerEncoder(
      make_model.build_model(self._config),
      tower=self._tower,
      batch_size=self._batch_size,
      devices=devices[: self._num_devices],
      params=params,
    )

  def run_inference(
    self,
    batch: Sequence[dict[str, Any]],
    model: tower_lib.TowerEncoder,
    inference_args: Any = None,
  ) -> Iterable[dict[str, Any]]:
    """Encodes one batch of elements and logs progress every `log_every_s` seconds."""
    stacked = {k: np.stack([e[k] for e in batch]) for k in model.inputs}
    out = model(stacked)
    Metrics.counter('make_jax.export', f'{self._tower}s_encoded').inc(len(batch))
    self._progress(len(batch))
    for i, element in enumerate(batch):
      result = {k: v for k, v in element.items() if k not in model.inputs}
      result.update({k: v[i] for k, v in out.items()})
      yield result

  def _progress(self, n: int) -> None:
    now = time.perf_counter()
    if not self._start:
      self._start = self._last_log = now
    self._count += n
    if now - self._last_log >= self._log_every_s:
      self._last_log = now
      rate = self._count / max(now - self._start, 1e-9)
      logging.info('%s tower: %d encoded (%.0f/s)', self._tower, self._count, rate)

  def batch_elements_kwargs(self) -> dict[str, int]:
    """Batches of up to the compiled batch size (shorter ones are padded)."""
    return {'min_batch_size': 1, 'max_batch_size': self._batch_size}


def model_source(
  config: ml_collections.ConfigDict,
  *,
  workdir: str = '',
  checkpoint: str = '',
  vocab: str = '',
  random_init: bool = False,
) -> tuple[str, ParamsLoader]:
  """(vocab path, params loader) for the CLIs: the trainer's workdir by default.

  The vocabulary is `vocab`, else `config.text.vocab_path`, else `<workdir>/vocab.txt`;
  params are the newest checkpoint of `checkpoint` (or `workdir`), or a random model.

  Raises:
    ValueError: no vocabulary, or neither a checkpoint nor `random_init`.
  """
  import os

  vocab = vocab or config.text.vocab_path or (os.path.join(workdir, 'vocab.txt') if workdir else '')
  if not vocab or not os.path.isfile(vocab):
    raise ValueError(f'no vocabulary file {vocab!r}: pass --vocab or a trainer --workdir')
  if random_init:
    return vocab, make_loader(config)
  if not (checkpoint or workdir):
    raise ValueError('pass --workdir or --checkpoint (or --random_init for an untrained model)')
  return vocab, make_loader(config, checkpoint or workdir)
