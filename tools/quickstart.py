r"""The main job on the embedded default: build synthetic data, show examples, train a bit.

  python -m tools.quickstart --config=configs/tiny.py --workdir=/tmp/make_jax_quickstart

Any config field can be overridden, e.g. `--config.train.num_steps=50` or
`--config.data.builder_config=zh_small` (the Chinese variant).

The stages print what they do; library INFO logs (orbax, Beam, the trainer's set-up) are
hidden unless `--verbosity=0` (or higher) is given.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from make_jax import quickstart

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/make_jax_quickstart', 'Output directory.')
_SHOW = flags.DEFINE_integer('show', 3, 'Training examples to print.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  quickstart.run(_CONFIG.value, _WORKDIR.value, show=_SHOW.value)


if __name__ == '__main__':
  app.run(main)
