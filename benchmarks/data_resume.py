r"""Resume cost of the two TFDS input paths: time to the first batch against
the step a run resumes at.

  python benchmarks/data_resume.py                          # 60,000 images
  python benchmarks/data_resume.py --examples=20000 --steps=0,50,100,150

Writes the full Fashion-MNIST training set (Debian's dataset-fashion-mnist,
grey in 3 channels) as a 'cifar10' TFDS data set of --shards files twice,
as TFRecord and as ArrayRecord, with the real TFDS writer, in --data_dir
(kept: a rerun reuses it). Then, for each resume step t, it opens the
training stream at t (`data.tfds_batches`: tf.data, skips t·B records of the
epoch first; `data.grain_batches`: grain, random access) and times the
first batch and the next --batches; the median of --repeats. On the tf.data
path the first batch grows with t·B mod N (records read and dropped); on the
grain path it should stay flat.
"""

import argparse
import os
import statistics
import sys
import time

import common  # pylint: disable=g-bad-import-order  (puts the checkout on sys.path)

sys.path.insert(0, os.path.join(common.ROOT, 'tests'))
import tfds_fixture  # pylint: disable=g-import-not-at-top,g-bad-import-order

from hatebm_jax import data  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', default='/tmp/hatebm_resume_bench')
  parser.add_argument('--examples', type=int, default=60_000)
  parser.add_argument('--shards', type=int, default=16)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', default='0,100,200,300,400,460')
  parser.add_argument('--batches', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--threads', type=int, default=8)
  args = parser.parse_args()
  steps = [int(s) for s in args.steps.split(',')]
  source = data.fashion_mnist_dir()
  dirs = {}
  for fmt in ('tfrecord', 'array_record'):
    path = os.path.join(args.data_dir, f'{fmt}-{args.examples}-{args.shards}')
    if not os.path.exists(os.path.join(path, 'cifar10')):
      start = time.time()
      tfds_fixture.prepare(
          path, args.examples, args.shards, fmt, source, names=('cifar10',)
      )
      print(f'wrote {fmt} in {time.time() - start:.0f} s', file=sys.stderr)
    dirs[fmt] = path

  def open_stream(fmt, step):
    if fmt == 'tfrecord':
      return data.tfds_batches(
          'cifar10', dirs[fmt], args.batch, 32, False, 0, start_step=step
      )
    return data.grain_batches(
        'cifar10',
        dirs[fmt],
        args.batch,
        32,
        False,
        0,
        start_step=step,
        num_threads=args.threads,
    )

  print(common.machine())
  print(
      f'{args.examples:,} examples in {args.shards} files, B={args.batch}: '
      f'{args.examples // args.batch} steps an epoch. Seconds, median of '
      f'{args.repeats}.\n'
  )
  print(
      '| resume step | records skipped (tf.data) | tf.data: open + 1st batch'
      f' | tf.data: next {args.batches} | grain: open + 1st batch'
      f' | grain: next {args.batches} |'
  )
  print('|---|---|---|---|---|---|')
  for step in steps:
    row = {}
    for fmt in ('tfrecord', 'array_record'):
      first, rest = [], []
      for _ in range(args.repeats):
        start = time.perf_counter()
        stream = open_stream(fmt, step)
        next(stream)
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(args.batches):
          next(stream)
        rest.append(time.perf_counter() - start)
        del stream
      row[fmt] = statistics.median(first), statistics.median(rest)
    skipped = step * args.batch % args.examples
    print(
        f'| {step} | {skipped:,} | {row["tfrecord"][0]:.2f} | '
        f'{row["tfrecord"][1]:.2f} | {row["array_record"][0]:.2f} | '
        f'{row["array_record"][1]:.2f} |',
        flush=True,
    )


if __name__ == '__main__':
  main()
