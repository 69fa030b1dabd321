r"""Cost of checking artefacts against their manifests: sizes (every start) vs SHA-256.

  python -m benchmarks.bench_verify --dirs=<workdir>/export/products,<workdir>/export/index

For each directory: its files' total size, then the median [range] over `--rounds` of the
size check that every open does and of the checksum check of `tools.serve --verify`
(`rundir.damaged_files` against a record of the directory taken here, so that
artefacts written before manifests carried one can be measured too).
"""

import pathlib
import statistics
import time

from absl import app, flags

from make_jax import rundir
from make_jax.export import manifest

_DIRS = flags.DEFINE_list('dirs', None, 'Artefact directories.', required=True)
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed rounds per check.')


def main(argv):
  del argv
  for d in map(pathlib.Path, _DIRS.value):
    size = sum(p.stat().st_size for p in d.rglob('*') if p.is_file())
    records = manifest.file_records(d)
    for mode, checksums in (('sizes', False), ('checksums', True)):
      times = []
      for _ in range(_ROUNDS.value):
        start = time.perf_counter()
        problems = rundir.damaged_files(d, records, checksums=checksums)
        times.append(time.perf_counter() - start)
      assert not problems, problems
      print(
        f'{d}: {len(records)} files, {size / 1e6:.1f} MB, {mode}: '
        f'{statistics.median(times) * 1e3:.1f} ms [{min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}]'
      )


if __name__ == '__main__':
  app.run(main)
