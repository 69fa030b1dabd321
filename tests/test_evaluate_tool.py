"""tools/evaluate.py end to end on a built TFDS split: ranked lines and embeddings score alike."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from make_jax.datasets import loading
from make_jax.evaluation import baselines, evaluate, sources
from make_jax.evaluation import eval_set as eval_set_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  data_dir = tmp_path_factory.getbasetemp() / 'tfds'
  builder = loading.prepare('synthetic_products', 'en_small', data_dir)
  return data_dir, builder, eval_set_lib.from_builder(builder, 'test')


def test_eval_set_of_a_builder_has_complete_target_sets(built):
  _, builder, es = built
  source = builder.as_data_source('test')
  assert sum(len(t) for t in es.targets) == len(source)  # Every record is some query's target.
  assert es.num_products == builder.info.splits['catalogue'].num_examples
  assert es.category_attribute == 'category' and all(es.generations)


def test_tool_scores_ranked_lines_like_the_library(built, tmp_path):
  data_dir, builder, es = built
  domain_words = list(builder.info.metadata.get('domain_words', ()))
  ids, scores = baselines.bm25_rankings(es, 100, domain_words=domain_words)
  ranked = tmp_path / 'bm25.jsonl'
  sources.write_ranked_lines(ranked, es.queries, ids, scores)
  out = tmp_path / 'eval.json'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'tools.evaluate',
      '--dataset=synthetic_products',
      '--builder_config=en_small',
      f'--data_dir={data_dir}',
      '--split=test',
      f'--ranked={ranked}',
      '--ks=10,100,5000',
      '--bootstrap=50',
      f'--output={out}',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'recall@10' in proc.stdout and '95% interval' in proc.stdout
  got = json.loads(out.read_text())
  want = evaluate.evaluate_rankings(
    es, sources.rankings_of(es.queries, ids), ks=(10, 100, 5000), bootstrap_samples=50
  )
  assert got['overall'] == pytest.approx(want['overall'], nan_ok=True)
  assert got['unscored_ks'] == [5000]  # Lists of 100 in a catalogue of 1000.
  assert len(got['per_query']) == es.num_queries


def test_embeddings_source_searches_exactly(built, tmp_path):
  _, builder, es = built
  domain_words = list(builder.info.metadata.get('domain_words', ()))
  rng = np.random.default_rng(0)
  p_emb = rng.normal(size=(es.num_products, 8)).astype(np.float32)
  q_emb = rng.normal(size=(es.num_queries, 8)).astype(np.float32)
  np.savez(tmp_path / 'p.npz', ids=es.catalogue.ids, embedding=p_emb)
  qids = sources.query_qids(es.queries, domain_words)
  np.savez(tmp_path / 'q.npz', ids=qids[::-1], embedding=q_emb[::-1])
  rankings, counts = sources.rankings_from_files(
    es,
    query_embeddings=tmp_path / 'q.npz',
    product_embeddings=tmp_path / 'p.npz',
    domain_words=domain_words,
    k=20,
  )
  assert counts['catalogue_products_without_embedding'] == 0
  # Naive reference: full argsort of the float64 scores of each query.
  for q in (0, es.num_queries - 1):
    s = q_emb[q].astype(np.float64) @ p_emb.astype(np.float64).T
    assert rankings[es.queries[q]] == es.catalogue.ids[np.argsort(-s, kind='stable')[:20]].tolist()
  with pytest.raises(ValueError, match='either ranked lists or'):
    sources.rankings_from_files(es, ranked='x', product_embeddings='y')
