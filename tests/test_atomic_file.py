"""Atomic writes: a failed write leaves the previous file intact and no temporary behind."""

import os

import pytest

from make_jax import atomic_file


def test_write_replaces_content_and_creates_parents(tmp_path):
  path = tmp_path / 'a' / 'b' / 'vocab.txt'
  atomic_file.write_text(path, 'x\ny\n')
  atomic_file.write_text(path, 'z\n')
  assert path.read_text() == 'z\n'
  assert os.listdir(path.parent) == ['vocab.txt']


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path):
  path = tmp_path / 'params.msgpack'
  atomic_file.write_bytes(path, b'old')
  with pytest.raises(TypeError):
    atomic_file.write_bytes(path, 'not bytes')  # f.write fails mid-way.
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['params.msgpack']
