"""`TowerEncoder`: one tower of `MakeModel` (product or query) jitted at one batch size.

The one way featurised products (or queries) become embeddings outside the train step:
the in-training evaluator (`retrieval/evaluator.py`), the export's Beam model handler
(`export/model_handler.py`) and the demo searcher's catalogue (`serving/service.py`) all
call it, so an embedding is computed by the same program wherever it is needed.

Why fixed batches: any number of rows is encoded in chunks of `batch_size`, the last one
padded by repeating its last row (well-formed inputs, no recompilation); with several
devices each chunk is sharded over a ('data',) mesh with the params replicated, and each
example's embedding is computed by the same program whatever the device count. Outputs
are float32: ('embedding', 'modal_weights') for the product tower, ('embedding',) for the
query tower.

Interface:

  enc = TowerEncoder(model, tower='product', batch_size=64, devices=None, params=None)
  enc({'title_ids': ..., ...})            -> {'embedding': np [n, d], 'modal_weights': ...}
  enc.on_device(examples, params)         -> the same as jax arrays on the first device
  enc.traces                              jit traces so far (one per input shape)
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TOWER_INPUTS = {
  'product': ('title_ids', 'title_mask', 'image', 'image_missing'),
  'query': ('query_ids', 'query_mask'),
}
TOWER_OUTPUTS = {'product': ('embedding', 'modal_weights'), 'query': ('embedding',)}


class TowerEncoder:
  """One tower of `MakeModel`, jitted at `batch_size`, over `devices` (batch sharded)."""

  def __init__(
    self,
    model: Any,
    *,
    tower: str,
    batch_size: int,
    devices: Sequence[jax.Device] | None = None,
    params: Any = None,
  ):
    """Compiles nothing yet (the first call does).

    Args:
      model: a `MakeModel`.
      tower: 'product' or 'query'.
      batch_size: rows per jitted call; must divide by the number of devices.
      devices: the devices a batch is sharded over (default: the first device).
      params: bound params (placed once, replicated); else every call passes its own.
    """
    if tower not in TOWER_INPUTS:
      raise ValueError(f'tower must be one of {sorted(TOWER_INPUTS)}; got {tower!r}')
    devices = list(devices or jax.devices()[:1])
    if batch_size % len(devices):
      raise ValueError(f'batch_size {batch_size} must divide by the {len(devices)} devices')
    self.tower, self.batch_size = tower, batch_size
    self.inputs, self.outputs = TOWER_INPUTS[tower], TOWER_OUTPUTS[tower]
    self.traces = 0
    method = model.encode_product if tower == 'product' else model.encode_query

    def encode(p, batch):
      self.traces += 1
      out = model.apply({'params': p}, *[batch[k] for k in self.inputs], method=method)
      out = out if tower == 'product' else (out,)
      return tuple(o.astype(jnp.float32) for o in out)

    mesh = Mesh(np.array(devices), ('data',))
    self._replicated = NamedSharding(mesh, PartitionSpec())
    self._data = NamedSharding(mesh, PartitionSpec('data'))
    self._fn = jax.jit(
      encode, in_shardings=(self._replicated, self._data), out_shardings=self._data
    )
    self._params = None if params is None else self.place(params)

  def place(self, params: Any) -> Any:
    """`params` replicated over this encoder's devices (pass the result to every call)."""
    return jax.device_put(params, self._replicated)

  def on_device(
    self, examples: Mapping[str, np.ndarray], params: Any = None
  ) -> tuple[jax.Array, ...]:
    """Encodes [n, ...] inputs (any n >= 1) in padded chunks; the outputs [n, ...] as jax
    arrays, in `outputs` order."""
    params = self._params if params is None else params
    if params is None:
      raise ValueError('no params: bind them at construction or pass them')
    n = len(examples[self.inputs[0]])
    if n == 0:
      raise ValueError('nothing to encode (0 rows)')
    parts: list[tuple[jax.Array, ...]] = []
    for start in range(0, n, self.batch_size):
      chunk = {k: np.asarray(examples[k][start : start + self.batch_size]) for k in self.inputs}
      m = len(chunk[self.inputs[0]])
      if m < self.batch_size:  # Pad by repeating the last row: same shapes, no recompile.
        chunk = {
          k: np.concatenate([v, np.repeat(v[-1:], self.batch_size - m, 0)])
          for k, v in chunk.items()
        }
      out = self._fn(params, jax.device_put(chunk, self._data))
      parts.append(tuple(o[:m] for o in out))
    if len(parts) == 1:
      return parts[0]
    return tuple(jnp.concatenate([p[i] for p in parts]) for i in range(len(self.outputs)))

  def __call__(
    self, examples: Mapping[str, np.ndarray], params: Any = None
  ) -> dict[str, np.ndarray]:
    """Encodes [n, ...] inputs (any n >= 1); returns {output name: np.ndarray [n, ...]}."""
    out = self.on_device(examples, params)
    return {name: np.asarray(o) for name, o in zip(self.outputs, out, strict=True)}
