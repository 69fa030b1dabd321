"""Registry of pre-training loss terms, keyed by the names used in `cfg.loss.weights`.

A term registers itself on import (`@register('qpm')`); `compute_losses` looks terms up by the
names of the configured weights, so adding a task is one new module, not a new branch.
A term is `fn(outputs, batch, loss_cfg, ctx) -> (share, metrics)`, where `share` is this
device's share of the term's global value (make_jax/parallel/collectives.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax

if TYPE_CHECKING:
  from make_jax.losses.memory_bank import MemoryBank


@dataclasses.dataclass(frozen=True)
class LossContext:
  """What a term needs besides model outputs, batch and config.

  Attributes:
    step: the current training step (may be traced).
    num_steps: total training steps (a Python int; schedules such as CDNS use it).
    bank: the MBNS queue, or None.
    axis_name: the data axis, or None on one device.
  """

  step: jax.Array | int
  num_steps: int
  bank: MemoryBank | None
  axis_name: str | None


LossTerm = Callable[
  [Mapping[str, Any], Mapping[str, Any], Any, LossContext],
  tuple[jax.Array, dict[str, jax.Array]],
]

_TERMS: dict[str, LossTerm] = {}


def register(name: str) -> Callable[[LossTerm], LossTerm]:
  """Decorator registering `fn` as the loss term `name`."""

  def deco(fn: LossTerm) -> LossTerm:
    if name in _TERMS:
      raise ValueError(f'loss term {name!r} is registered twice')
    _TERMS[name] = fn
    return fn

  return deco


def get(name: str) -> LossTerm:
  """The term registered as `name`; ValueError naming the known terms otherwise."""
  if name not in _TERMS:
    raise ValueError(f'unknown loss term {name!r} in cfg.loss.weights; known: {sorted(_TERMS)}')
  return _TERMS[name]


def names() -> list[str]:
  """Names of all registered terms."""
  return sorted(_TERMS)


def require(mapping: Mapping[str, Any], keys: tuple[str, ...], term: str, what: str) -> None:
  """ValueError naming the missing keys of `mapping` that term `term` needs."""
  missing = [k for k in keys if k not in mapping]
  if missing:
    raise ValueError(f'loss term {term!r} needs {what} keys {missing}; got {sorted(mapping)}')
