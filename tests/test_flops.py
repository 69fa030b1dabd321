"""Model FLOPs (matmuls + convolutions counted on the jaxpr) against hand counts, and the
interleaved MFU statistics against a known workload."""

import jax
import jax.numpy as jnp
import pytest

from make_jax.train import flops

_DN = ('NHWC', 'HWIO', 'NHWC')


def _conv(x, w, stride):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), [(1, 1)] * 2, dimension_numbers=_DN)


def test_dot_counts_two_flops_per_multiply_add():
  a, b = jnp.ones((3, 4)), jnp.ones((4, 5))
  assert flops.model_flops(jnp.matmul, a, b) == 2 * 3 * 4 * 5
  q, k = jnp.ones((2, 6, 8, 16)), jnp.ones((2, 7, 8, 16))  # Attention scores: batch, heads.
  assert flops.model_flops(lambda q, k: jnp.einsum('bqhd,bkhd->bhqk', q, k), q, k) == (
    2 * 2 * 8 * 6 * 7 * 16
  )


@pytest.mark.parametrize('stride', [1, 2])
def test_conv_backward_costs_twice_its_forward(stride):
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 5))
  out = 8 // stride
  forward = 2 * 2 * out * out * 5 * (3 * 3 * 4)
  assert flops.model_flops(lambda x, w: _conv(x, w, stride), x, w) == forward
  # Gradients for kernel and input: two more convolutions of the forward's cost, the
  # input one (lhs-dilated for stride 2) without the inserted zeros.
  loss = lambda w, x: jnp.sum(_conv(x, w, stride))
  assert flops.model_flops(jax.grad(loss, argnums=(0, 1)), w, x) == 3 * forward - forward
  assert flops.model_flops(jax.value_and_grad(loss, argnums=(0, 1)), w, x) == 3 * forward


def test_dead_code_nested_calls_and_scans():
  a, b = jnp.ones((3, 4)), jnp.ones((4, 5))
  both = jax.jit(lambda a, b: (a @ b, (a @ b) @ b.T))
  assert flops.model_flops(lambda a, b: both(a, b)[0], a, b) == 120  # Unused output dropped.
  assert flops.model_flops(both, a, b) == 120 + 120 + 120
  body = lambda c, _: (c @ b @ b.T, None)
  assert flops.model_flops(lambda a: jax.lax.scan(body, a, None, length=3)[0], a) == 3 * 240
  # Abstract arguments: nothing is allocated or run.
  big = jax.ShapeDtypeStruct((4096, 4096), jnp.float32)
  assert flops.model_flops(jnp.matmul, big, big) == 2 * 4096**3


def test_interleaved_mfu_of_the_probe_itself_is_about_one():
  probe = flops.MatmulProbe(n=256, repeats=3)
  a = jnp.ones((256, 256))
  mm = jax.jit(jnp.matmul)
  mm(a, a).block_until_ready()
  work = flops.model_flops(jnp.matmul, a, a)
  stats = flops.interleaved_mfu(
    lambda: mm(a, a).block_until_ready(),
    work,
    rounds=5,
    steps_per_round=3,
    probe=probe,
    xla_flops_per_step=2 * work,
  )
  assert stats['mfu_min'] <= stats['mfu'] <= stats['mfu_max']
  assert stats['peak_flops_min'] <= stats['peak_flops'] <= stats['peak_flops_max']
  # The probe's own matmul, timed as a mean rather than a best-of: MFU near (at most about) 1.
  assert 0.2 < stats['mfu'] < 1.5
  assert stats['xla_mfu'] == pytest.approx(2 * stats['mfu'])


def test_rounds_pair_each_timing_with_the_probes_around_it():
  peaks = iter([10.0, 20.0, 30.0, 40.0, 50.0])
  rounds = flops.interleave(
    {'a': lambda: None, 'b': lambda: None}, rounds=2, probe=lambda: next(peaks) * 1e9
  )
  assert rounds.peaks['a'] == [15e9, 35e9]  # Probes 10 | a | 20 | b | 30 | a | 40 | b | 50.
  assert rounds.peaks['b'] == [25e9, 45e9]
