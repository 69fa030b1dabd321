"""tools/preprocess_text: one JSON line per input line, so output line N is input line N."""

import json
import os
import subprocess
import sys

from make_jax.text import EMPTY_QID, TextPreprocessor, build_vocab, save_vocab

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=_ROOT)
  out = subprocess.run(
    [sys.executable, '-m', 'tools.preprocess_text', *args],
    env=env,
    cwd=_ROOT,
    capture_output=True,
    check=True,
    timeout=120,
  )
  return [json.loads(line) for line in out.stdout.decode('utf-8').split('\n') if line], out.stderr


def test_every_input_line_gives_one_output_line(tmp_path):
  corpus = ['red chief shoes', '红色 连衣裙', 'blue dress'] * 3
  vocab = tmp_path / 'vocab.txt'
  save_vocab(build_vocab(corpus, 200), vocab)
  domain = tmp_path / 'domain.txt'
  domain.write_text('Red Chief\n\n红隼\n', encoding='utf-8')
  # Blank lines, CRLF, a lone CR and U+2028 inside a line, invalid UTF-8, no final newline.
  lines = [
    b'red chief shoes',
    b'',
    b'  ',
    b'a\rb',
    b'red\xffdress\r',
    '红色\u2028连衣裙'.encode(),
    b'x',
  ]
  path = tmp_path / 'in.txt'
  path.write_bytes(b'\n'.join(lines))
  records, _ = _run(
    f'--vocab={vocab}', f'--input={path}', f'--domain_words={domain}', '--max_len=8'
  )
  assert [r['line'] for r in records] == list(range(1, len(lines) + 1))
  texts = [b.removesuffix(b'\r').decode('utf-8', 'replace') for b in lines]  # CRLF ends a line.
  assert [r['text'] for r in records] == texts
  pre = TextPreprocessor.from_vocab_file(vocab, domain_words=['Red Chief', '红隼'])
  for r in records:
    assert r['words'] == pre.words(r['text'])
    assert r['qid'] == pre.qid(r['text'])
    ids, mask = pre.encode(r['text'], 8)
    assert r['ids'] == ids[mask == 1].tolist()
  assert records[0]['words'] == ['red chief', 'shoes']
  assert records[1]['qid'] == records[2]['qid'] == EMPTY_QID and records[1]['words'] == []
  assert records[4]['words'] == ['dress', 'red']  # The bad byte separates the words.


def test_tsv_column_and_missing_fields(tmp_path):
  vocab = tmp_path / 'vocab.txt'
  save_vocab(build_vocab(['red dress', 'blue shoes'] * 2, 100), vocab)
  path = tmp_path / 'q.tsv'
  path.write_text('1\tred dress\nno tab here\n\n3\tblue shoes\n', encoding='utf-8')
  records, stderr = _run(f'--vocab={vocab}', f'--input={path}', '--tsv_column=1', '--text=Red')
  assert [r['line'] for r in records] == [None, 1, 2, 3, 4]
  assert records[1]['field'] == 'red dress' and records[1]['words'] == ['dress', 'red']
  assert 'error' in records[2] and 'qid' not in records[2]
  assert 'error' in records[3]
  assert records[4]['words'] == ['blue', 'shoes']
  assert b'2 lines lack field 1' in stderr
