"""One sharding vocabulary for every module: logical axis names and the rules mapping them.

Weights carry the logical names `vocab`, `embed`, `mlp`, `heads`, `kv` (and a few that are
never sharded); activations carry `act_*` names. Code names axes, never mesh axes, so the
same module runs unsharded (no rules in context: the annotations are no-ops) or sharded by
`nn.logical_axis_rules(LOGICAL_AXIS_RULES)` over a `Mesh(('data', 'model'))` (configs' `mesh`).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

# (logical name, mesh axis or None). Data parallel over `data`; tensor parallel over `model`
# for the wide dimensions (vocabulary, MLP, heads), as in Megatron-style sharding.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
  # Activations.
  ('act_batch', 'data'),
  ('act_len', None),
  ('act_embed', None),
  ('act_mlp', 'model'),
  ('act_heads', 'model'),
  ('act_kv', None),
  ('act_vocab', 'model'),
  ('act_regions', None),
  ('act_height', None),
  ('act_width', None),
  ('act_channels', None),
  # Weights.
  ('vocab', 'model'),
  ('embed', None),
  ('mlp', 'model'),
  ('heads', 'model'),
  ('kv', None),
  ('position', None),
  ('token_type', None),
  ('conv_height', None),
  ('conv_width', None),
  ('conv_in', None),
  ('conv_out', None),
  ('channels', None),
  ('region_features', None),
  ('modalities', None),
)


def partitioned(init: Callable[..., Any], names: Sequence[str | None]) -> Callable[..., Any]:
  """Wraps an initializer so the parameter it creates carries logical axis `names`."""
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Annotates activation `x` with logical axis `names` (a no-op outside a mesh/rules scope)."""
  return nn.with_logical_constraint(x, tuple(names))


def logical_partition_specs(abstract_variables: Any) -> Any:
  """Returns the tree of logical `PartitionSpec`s of boxed variables (e.g. from eval_shape(init)).

  Map them to mesh axes with `nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)`.
  """
  return nn.get_partition_spec(abstract_variables)
