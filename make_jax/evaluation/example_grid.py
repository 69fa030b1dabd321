"""The example grid of the results figures: what two rows retrieve for a few test queries.

Why apart from `figures.py` (which reads the results directory and writes the PNG): the
grid is drawn from data in memory (an EvalSet, rankings, encoded images), so it is the
same whoever produced the rankings; and the product images come from the dataset's own
encoded bytes (`product_images`), decoded here with PIL.

Queries are drawn with a seed among those that have a target and a list in every row
(`choose_queries`), never picked by how a row does on them. For each query the grid shows
its text and, per row, the top products: image, a short title, and a green frame and tick
where the product is in the query's target set.
"""

import io
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from make_jax.evaluation.eval_set import EvalSet
from make_jax.input import reading

HIT_COLOUR = '#1a9641'
MISS_COLOUR = '#bbbbbb'
_BLANK = np.full((80, 60, 3), 220, np.uint8)  # A product without a decodable image.


def choose_queries(
  eval_set: EvalSet, rankings: Sequence[Mapping[str, Sequence[int]]], n: int, seed: int = 0
) -> list[int]:
  """`n` query indices (ascending) drawn with `seed` among the queries that have a target
  and a list in every ranking: the same for the same inputs, never picked by result.

  Raises:
    ValueError: no query qualifies.
  """
  ok = [
    i
    for i, q in enumerate(eval_set.queries)
    if len(eval_set.targets[i]) and all(q in r for r in rankings)
  ]
  if not ok:
    raise ValueError('No query has a target and a ranked list in every row')
  rng = np.random.default_rng(seed)
  return sorted(rng.choice(ok, size=min(n, len(ok)), replace=False).tolist())


def product_images(
  builder: Any, product_ids: Sequence[int], split: str = 'catalogue'
) -> dict[int, bytes]:
  """{product id: encoded image bytes} of the wanted products in a TFDS builder's split."""
  wanted = {int(i) for i in product_ids}
  out: dict[int, bytes] = {}
  for record in reading.records(reading.undecoded_source(builder, split), chunk=2048):
    pid = int(record['product_id'])
    if pid in wanted and pid not in out:
      out[pid] = bytes(record['image'])
  return out


def decode(data: bytes | None) -> np.ndarray | None:
  """uint8 [H, W, 3] of encoded image bytes (JPEG, PNG, ...); None when absent or broken."""
  from PIL import Image, UnidentifiedImageError

  if not data:
    return None
  try:
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(im.convert('RGB'))
  except (UnidentifiedImageError, OSError, ValueError):
    return None


def _title(eval_set: EvalSet, pid: int, hit: bool) -> str:
  row = eval_set.catalogue.rows_of_ids(np.asarray([pid]))[0]
  title = eval_set.catalogue.titles[row] if row >= 0 else f'id {pid} (not in catalogue)'
  return ('✓ ' if hit else '') + textwrap.fill(textwrap.shorten(title, 44, placeholder='…'), 22)


def grid_figure(
  eval_set: EvalSet,
  rankings: Sequence[tuple[str, Mapping[str, Sequence[int]]]],
  pictures: Mapping[int, bytes],
  chosen: Sequence[int],
  top: int = 5,
) -> tuple[Figure, int]:
  """(the grid, how many shown products had no decodable image).

  Args:
    eval_set: the split (queries, targets, titles).
    rankings: (row label, {query: product ids, best first}), one grid row each.
    pictures: product id -> encoded image bytes (products not in it are blank tiles).
    chosen: query indices, one block each.
    top: products shown per row.
  """
  fig = Figure(figsize=(1.9 * top + 1.4, 1.95 * len(rankings) * len(chosen)), dpi=100)
  fig.set_layout_engine('constrained')
  missing = 0
  for sub, q in zip(fig.subfigures(len(chosen), 1, squeeze=False).ravel(), chosen, strict=True):
    targets = set(eval_set.targets[q].tolist())
    plural = 's' * (len(targets) != 1)
    sub.suptitle(
      f'"{eval_set.queries[q]}"  ({len(targets)} target product{plural})',
      fontsize=11,
      ha='left',
      x=0.01,
    )
    axes = sub.subplots(len(rankings), top, squeeze=False)
    for r, (label, ranking) in enumerate(rankings):
      ids = list(ranking.get(eval_set.queries[q], []))[:top]
      axes[r, 0].set_ylabel(textwrap.fill(label, 16), fontsize=9)
      for c, ax in enumerate(axes[r]):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= len(ids):
          ax.set_frame_on(False)
          continue
        picture = decode(pictures.get(ids[c]))
        if picture is None:
          missing += 1
        ax.imshow(_BLANK if picture is None else picture)
        hit = ids[c] in targets
        for spine in ax.spines.values():
          spine.set_edgecolor(HIT_COLOUR if hit else MISS_COLOUR)
          spine.set_linewidth(4 if hit else 1)
        ax.set_title(
          _title(eval_set, ids[c], hit), fontsize=7, color=HIT_COLOUR if hit else 'black'
        )
  return fig, missing
