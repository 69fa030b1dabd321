"""BERT import: parity with the reference PyTorch BertModel, and clear errors on mismatches."""

import dataclasses
import pathlib

import jax
import numpy as np
import pytest

from make_jax.models import bert_import
from make_jax.models.model_config import ModelConfig
from make_jax.models.transformer import TextEncoder

# all-MiniLM-L6-v2's shape (configs/base.py's text encoders); no dropout at inference.
MINILM = ModelConfig(dropout_rate=0.0)

SENTENCES = [
  'red summer dress',
  'Nike running shoes for men',
  'a',
  'the quick brown fox jumps over the lazy dog',
  'wireless bluetooth headphones with noise cancellation and 30 hour battery',
  'café crème brûlée',
  'iPhone 15 Pro Max case, shock-proof!!!',
  "women's leather handbag (black)",
  'organic green tea 100 bags',
  'kids lego set 1000 pieces',
  'unbelievably uncharacteristically antidisestablishmentarianism',
  '1234567890',
  'stainless steel water bottle 750ml',
  'men slim fit jeans blue denim',
  'gaming laptop rtx 4090 32gb ram',
  '北京 烤鸭',
  'yoga mat non slip extra thick',
  'vintage polaroid camera',
  'mascara',
  'sofa bed with storage, grey fabric, three seater, modern living room furniture',
  'Tokyo 2020 olympics t-shirt',
  'ceramic coffee mug set of 4',
  # Longer than the 32-token window: truncated, so one row has no padding at all.
  'a very long product title about a cotton t-shirt with a round neck, short sleeves, a '
  'printed logo on the front, available in red, blue, green, black and white, sizes s to xxl',
]


@pytest.fixture(scope='module')
def checkpoint_dir() -> pathlib.Path:
  path = bert_import.default_checkpoint_dir()
  if not (path / 'model.safetensors').is_file():
    pytest.skip(f'all-MiniLM-L6-v2 is not installed at {path}')
  return path


def _tokenize(checkpoint_dir, length=32):
  tokenizers = pytest.importorskip('tokenizers')
  tok = tokenizers.BertWordPieceTokenizer(str(checkpoint_dir / 'vocab.txt'), lowercase=True)
  tok.enable_truncation(length)
  tok.enable_padding(length=length, pad_id=0)
  enc = tok.encode_batch(SENTENCES)
  ids = np.array([e.ids for e in enc], np.int32)
  mask = np.array([e.attention_mask for e in enc], np.int32)
  return ids, mask


def _encoder_params(checkpoint_dir, cfg=MINILM):
  abstract = jax.eval_shape(
    lambda: TextEncoder(cfg).init(jax.random.key(0), np.zeros((1, 8), np.int32), np.ones((1, 8)))
  )
  abstract = {'title_encoder': jax.tree.map(lambda x: x, abstract)['params']}
  from flax.linen import meta

  abstract = meta.unbox(abstract)
  params, imported = bert_import.import_bert(
    abstract, checkpoint_dir, num_heads=cfg.num_heads, encoders=('title_encoder',)
  )
  assert imported == ['title_encoder']
  return params['title_encoder']


def test_title_encoder_matches_transformers_bert(checkpoint_dir):
  torch = pytest.importorskip('torch', reason='the parity reference needs PyTorch (CPU)')
  transformers = pytest.importorskip('transformers', reason='the parity reference needs it')
  ids, mask = _tokenize(checkpoint_dir)
  assert (mask == 0).any() and (mask.sum(1) == mask.shape[1]).any(), 'want padded and full rows'
  params = _encoder_params(checkpoint_dir)
  ours = jax.jit(lambda p, i, m: TextEncoder(MINILM).apply({'params': p}, i, m))(params, ids, mask)
  ref_model = transformers.BertModel.from_pretrained(str(checkpoint_dir), add_pooling_layer=False)
  ref_model.eval()
  with torch.no_grad():
    ref = ref_model(
      input_ids=torch.from_numpy(ids.astype(np.int64)),
      attention_mask=torch.from_numpy(mask.astype(np.int64)),
    ).last_hidden_state.numpy()
  ours = np.asarray(ours)
  real = mask.astype(bool)
  # Every real token of every (padded) sentence: the outputs anything downstream reads.
  np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)
  # Padded positions attend over the real keys only in both, so they agree too; their values
  # are never used ([CLS] pooling, MLM weight 0) and float32 rounding differs more there
  # (up to ~1.3e-4 on one outlier channel here, 3e-6 on real tokens), hence the looser bound.
  np.testing.assert_allclose(ours[~real], ref[~real], atol=1e-3, rtol=0)


def test_import_fills_both_encoders_of_abstract_model(checkpoint_dir):
  from flax.linen import meta

  from configs import base
  from make_jax.models.make_model import build_model, example_batch

  config = base.get_config()
  model = build_model(config)
  abstract = meta.unbox(
    jax.eval_shape(lambda: model.init(jax.random.key(0), example_batch(config, 1)))
  )['params']
  params, imported = bert_import.import_bert(abstract, checkpoint_dir, num_heads=12)
  assert imported == ['query_encoder', 'title_encoder']
  _, tensors = bert_import.load_checkpoint(checkpoint_dir)
  word = tensors['embeddings.word_embeddings.weight']
  q = params['query_encoder']
  np.testing.assert_array_equal(q['word_embeddings']['embedding'], word)
  w = tensors['encoder.layer.5.attention.self.key.weight']
  np.testing.assert_array_equal(
    params['title_encoder']['stack']['layer_5']['attention']['key']['kernel'].reshape(384, 384),
    w.T,
  )
  # The image encoder is left alone (still abstract here).
  assert isinstance(jax.tree.leaves(params['image_encoder'])[0], jax.ShapeDtypeStruct)


def test_hidden_size_mismatch_names_parameter_and_shapes(checkpoint_dir):
  cfg = dataclasses.replace(MINILM, hidden_size=64, num_heads=4, mlp_dim=128)
  with pytest.raises(ValueError, match=r'model.num_heads=4.*num_attention_heads=12'):
    _encoder_params(checkpoint_dir, cfg)
  cfg = dataclasses.replace(MINILM, hidden_size=60, mlp_dim=128)
  with pytest.raises(ValueError) as err:
    _encoder_params(checkpoint_dir, cfg)
  msg = str(err.value)
  assert msg.startswith('shape mismatch for parameter title_encoder/'), msg
  assert '60' in msg.split('checkpoint')[0] and '384' in msg.split('checkpoint tensor')[1], msg


def test_layer_count_mismatch_is_named(checkpoint_dir):
  cfg = dataclasses.replace(MINILM, num_layers=4)
  with pytest.raises(ValueError, match=r"checkpoint but not the model \['layer_4', 'layer_5'\]"):
    _encoder_params(checkpoint_dir, cfg)


def test_missing_checkpoint_files_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='has no config.json'):
    bert_import.load_checkpoint(tmp_path)


def test_save_params_is_atomic_and_round_trips(tmp_path):
  tree = {'a': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}, 'b': np.float32(2.0)}
  path = tmp_path / 'sub' / 'params.msgpack'
  bert_import.save_params(tree, path)
  back = bert_import.load_params(path)
  np.testing.assert_array_equal(back['a']['kernel'], tree['a']['kernel'])
  assert [p.name for p in path.parent.iterdir()] == ['params.msgpack']  # No temp files left.


def test_cli_reports_config_mismatch(checkpoint_dir, tmp_path):
  import subprocess
  import sys

  root = pathlib.Path(__file__).resolve().parent.parent
  out = tmp_path / 'p.msgpack'
  proc = subprocess.run(
    [sys.executable, '-m', 'tools.import_bert', '--config=configs/tiny.py', f'--output={out}'],
    cwd=root,
    capture_output=True,
    text=True,
    timeout=120,
    env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'},
  )
  assert proc.returncode != 0
  assert 'model.num_heads=4 but the checkpoint has num_attention_heads=12' in proc.stderr
  assert not out.exists()
