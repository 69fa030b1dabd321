"""Input pipeline: contract-2 batches, exact resume, a state refused on another input,
disjoint host shards, images padded (not stretched), clear errors."""

import io

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from benchmarks import step_setup
from configs import tiny
from make_jax.input import device as ip_device
from make_jax.input import featurize as ip_featurize
from make_jax.input import pipeline as ip


@pytest.fixture()
def config(builder):
  c = tiny.get_config()
  c.data.builder_config = 'en_small'
  c.data.data_dir = str(builder.data_dir_root)
  return c


def _pipeline(config, text, builder, **kw):
  kw = {'process_index': 0, 'process_count': 1, 'local_device_count': 8} | kw
  return ip.create_pipeline(config, text, builder=builder, **kw)


def _equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batches_follow_contract_2(config, text, builder):
  config.data.image_size = 24
  batch = next(_pipeline(config, text, builder))
  b, lq, lt = 16, config.text.query_len, config.text.title_len
  expected = {
    'query_ids': ((b, lq), np.int32),
    'query_mask': ((b, lq), np.int32),
    'query_keyword': ((b, lq), np.int32),
    'title_ids': ((b, lt), np.int32),
    'title_mask': ((b, lt), np.int32),
    'title_keyword': ((b, lt), np.int32),
    'image': ((b, 24, 24, 3), np.uint8),
    'image_missing': ((b,), np.bool_),
    'product_id': ((b,), np.int32),
    'log_p': ((b,), np.float32),
  }
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  # The constant that names them, and the benchmarks' copy (it runs against old trees too).
  assert set(ip_featurize.BATCH_KEYS) == set(expected) == set(step_setup.RAW_KEYS)
  assert (batch['query_ids'][:, 0] == text.cls_id).all()
  assert batch['query_keyword'].sum() > 0  # Synthetic queries share words with titles.


def test_restored_position_reproduces_the_batch_sequence(config, text, builder):
  config.data.global_batch_size = 64  # 4564 / 64: several steps cross an epoch boundary.
  first = _pipeline(config, text, builder)
  for _ in range(70):
    next(first)
  state = first.get_state()
  expected = [next(first) for _ in range(5)]
  fresh = _pipeline(config, text, builder)
  fresh.set_state(state)
  for want in expected:
    _equal(next(fresh), want)
  # Threads featurise in parallel but the batches are the same.
  config.data.worker_count = 2
  threaded = _pipeline(config, text, builder)
  threaded.set_state(state)
  _equal(next(threaded), expected[0])
  threaded.close()


def test_state_for_another_split_size_seed_or_host_layout_is_refused(text, builder):
  source = _Indexed(builder.as_data_source('train', decoders={'image': tfds.decode.SkipDecoding()}))
  featurize = _featurizer(text)

  def pipeline(src=source, **kw):
    kw = {'batch_size': 4, 'seed': 0, 'process_index': 0, 'process_count': 1} | kw
    return ip.InputPipeline(src, featurize, **kw)

  first = pipeline()
  next(first)
  state = first.get_state()
  assert state['num_records'] == len(source)
  pipeline().set_state(state)  # The same input: accepted.
  shorter = _Indexed(source, length=len(source) - 1)  # The same records, one fewer.
  for other, message in [
    (pipeline(src=shorter), f'split size {len(source)} .this pipeline: {len(source) - 1}'),
    (pipeline(seed=1), 'shuffle seed 0 .this pipeline: 1'),
    (pipeline(process_count=2), 'host count 1 .this pipeline: 2'),
    (pipeline(process_index=1, process_count=2), 'host index 0 .this pipeline: 1'),
  ]:
    with pytest.raises(ValueError, match=message):
      other.set_state(state)
  with pytest.raises(ValueError, match='position is invalid'):
    pipeline().set_state(state | {'offset': len(source) + 1})


def test_non_square_images_are_padded_to_a_square_not_stretched():
  photo = np.zeros((80, 60, 3), np.uint8)  # A 3:4 (W:H) photo, dark red.
  photo[..., 0] = 200
  buf = io.BytesIO()
  Image.fromarray(photo).save(buf, format='PNG')
  image = ip_featurize.decode_image(buf.getvalue(), 40)
  # Reference: white 80x80 canvas, photo centred (columns 10..69), bilinear to 40x40.
  square = np.full((80, 80, 3), 255, np.uint8)
  square[:, 10:70] = photo
  expected = np.asarray(Image.fromarray(square).resize((40, 40), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(image, expected)
  assert (image[:, :4] == 255).all() and (image[:, 36:] == 255).all()  # Padding, not stretch.
  assert (image[:, 6:34] == [200, 0, 0]).all()


def test_shuffle_depends_on_the_seed(config, text, builder):
  a = next(_pipeline(config, text, builder))['product_id']
  assert (next(_pipeline(config, text, builder))['product_id'] == a).all()
  config.data.shuffle_seed = 1
  assert (next(_pipeline(config, text, builder))['product_id'] != a).any()


class _Indexed:
  """A data source whose records also carry their index (to see who read what)."""

  def __init__(self, source, corrupt=(), length=None):
    self._source, self._corrupt = source, dict(corrupt)
    self._length = len(source) if length is None else length

  def __len__(self):
    return self._length

  def __getitem__(self, i):
    r = dict(self._source[i]) | {'index': i}
    return r | self._corrupt.get(i, {})


def _featurizer(text, **kw):
  inner = ip_featurize.make_featurizer(text, image_size=32, query_len=8, title_len=16, **kw)
  return lambda r: inner(r) | {'index': np.int64(r['index'])}


def test_hosts_read_disjoint_shards_that_cover_the_split(text, builder):
  source = _Indexed(builder.as_data_source('train', decoders={'image': tfds.decode.SkipDecoding()}))
  n = len(source)
  seen = []
  for host in range(2):
    p = ip.InputPipeline(
      source,
      _featurizer(text),
      batch_size=7,
      num_epochs=1,
      seed=3,
      process_index=host,
      process_count=2,
    )
    # Smaller than the shard: the last partial batch of the single epoch is dropped.
    idx = np.concatenate([b['index'] for b in p])
    assert len(idx) == (n // 2) // 7 * 7 == p.steps_per_epoch * 7
    seen.append(set(idx.tolist()))
  assert not seen[0] & seen[1]
  # Batch size 1 sees the whole shard: the two hosts together cover the split.
  covered = set()
  for host in range(2):
    p = ip.InputPipeline(
      source, _featurizer(text), batch_size=1, num_epochs=1, process_index=host, process_count=2
    )
    covered |= {int(b['index'][0]) for b in p}
  assert len(covered) == n - n % 2


def test_bad_records_are_skipped_and_counted(text, builder):
  raw = builder.as_data_source('train', decoders={'image': tfds.decode.SkipDecoding()})
  corrupt = {i: {'image': b'\x89PNG broken'} for i in range(0, 40, 4)}
  corrupt |= {i: {'title': b'  '} for i in range(1, 40, 8)}
  p = ip.InputPipeline(
    _Indexed(raw, corrupt),
    _featurizer(text),
    batch_size=8,
    shuffle=False,
    process_index=0,
    process_count=1,
  )
  batches = [next(p) for _ in range(5)]  # 40 records read, 15 bad, 25 good + 15 more.
  idx = np.concatenate([b['index'] for b in batches])
  assert all(b['image'].shape == (8, 32, 32, 3) for b in batches)
  assert not set(idx.tolist()) & set(corrupt)
  assert p.stats == {'bad_image': 10, 'empty_title': 5}
  assert p.get_state()['skipped'] == p.stats


@pytest.mark.parametrize(
  ('global_batch', 'hosts', 'devices', 'match'),
  [(10, 4, 1, 'number of hosts'), (12, 1, 8, 'local devices'), (0, 1, 1, 'positive')],
)
def test_bad_global_batch_sizes_give_a_clear_error(
  config, text, builder, global_batch, hosts, devices, match
):
  config.data.global_batch_size = global_batch
  with pytest.raises(ValueError, match=match):
    _pipeline(config, text, builder, process_count=hosts, local_device_count=devices)


def test_unbuilt_dataset_gives_a_clear_error(config, text, tmp_path):
  config.data.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match='not built'):
    ip.create_pipeline(config, text, process_index=0, process_count=1, local_device_count=8)


def test_device_helpers(config, text, builder):
  batch = next(_pipeline(config, text, builder))
  per_device = ip_device.shard_for_pmap(batch, 8)
  assert per_device['image'].shape == (8, 2, 32, 32, 3)
  np.testing.assert_array_equal(per_device['title_ids'].reshape(16, -1), batch['title_ids'])
  with pytest.raises(ValueError, match='does not split'):
    ip_device.shard_for_pmap(batch, 3)
  mesh = jax.make_mesh((8,), ('data',))
  global_batch = ip_device.make_global_batch(batch, mesh)
  assert global_batch['image'].sharding.spec == jax.sharding.PartitionSpec('data')
  assert len(global_batch['log_p'].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(global_batch['log_p']), batch['log_p'])
