"""Adaptive average pooling to the 4x4 region grid, against a naive loop reference."""

import math

import numpy as np
import pytest

from make_jax.models.resnet import adaptive_avg_pool


def _naive(x, grid):
  b, h, w, c = x.shape
  out = np.zeros((b, grid, grid, c), np.float64)
  for i in range(grid):
    for j in range(grid):
      h0, h1 = (i * h) // grid, math.ceil((i + 1) * h / grid)
      w0, w1 = (j * w) // grid, math.ceil((j + 1) * w / grid)
      out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize('h,w', [(4, 4), (7, 7), (5, 9), (8, 8), (13, 6)])
def test_adaptive_pool_matches_naive(h, w):
  x = np.random.RandomState(h * w).randn(2, h, w, 3).astype(np.float32)
  np.testing.assert_allclose(adaptive_avg_pool(x, 4), _naive(x, 4), atol=1e-5)


def test_map_smaller_than_grid_is_a_clear_error():
  with pytest.raises(ValueError, match='3x5, smaller than the 4x4 region grid'):
    adaptive_avg_pool(np.zeros((1, 3, 5, 2), np.float32), 4)
