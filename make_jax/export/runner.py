"""Beam pipeline options with this project's default runner.

Why: with no `--runner`, Beam 2.77's DirectRunner first tries the Prism runner, which
downloads a binary at run time (and fails without internet before falling back). The
default here is the DirectRunner's own in-process batch engine (`FnApiRunner`), which the
DirectRunner would use anyway after that fallback; any `--runner=...` given (Dataflow,
Flink, Spark, DirectRunner) is passed through unchanged.
"""

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_RUNNER = 'FnApiRunner'


def pipeline_options(args: Sequence[str] = ()) -> PipelineOptions:
  """PipelineOptions from command-line style `args`, the in-process runner by default."""
  args = list(args)
  if not any(a == '--runner' or a.startswith('--runner=') for a in args):
    args.append(f'--runner={DEFAULT_RUNNER}')
  return PipelineOptions(args)
