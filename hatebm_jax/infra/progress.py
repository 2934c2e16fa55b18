"""Progress lines with an ETA for the long loops outside training.

Sampling (`serving.draw.draw_images`), feature extraction for FID/FCD and
the reference-feature cache log one line per tenth of their work (and at
least every `every_secs`), through absl logging; work is counted when a
batch ends, so batches larger than a tenth give one line each:

  drawing 10,000 samples (ebm): 3,000/10,000 (30%), 41 s, ETA 1m36s

Training reports through clu's `periodic_actions.ReportProgress`, whose
lines speak of training steps; these loops count images, so they have
their own.
"""

import time

from absl import logging


def _format_secs(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m'


class Progress:
  """Counts units of work done and logs at each tenth of `total`.

  Usage: `p = Progress('drawing 10,000 samples', 10_000)`, then
  `p.update(done)` after each batch with the units done so far.
  """

  def __init__(
      self,
      what: str,
      total: int,
      every_fraction: float = 0.1,
      every_secs: float = 60.0,
      unit: str = '',
  ):
    """Args: what: the job, as the line starts; total: units of work, ≥ 1;
    every_fraction: log each time this fraction more is done (0.1: ten
    lines); every_secs: log at least this often (seconds); unit: appended
    to the counts (e.g. ' images')."""
    self.what, self.total, self.unit = what, max(int(total), 1), unit
    self.every_units = max(1, int(self.total * every_fraction))
    self.every_secs = every_secs
    self.start = self.last_time = time.monotonic()
    self.last_logged = 0
    self.lines = 0

  def update(self, done: int) -> None:
    """Records that `done` units (cumulative) are finished; logs a line
    when a tenth more is done, `every_secs` passed, or all is done."""
    now = time.monotonic()
    due = (
        done - self.last_logged >= self.every_units
        or now - self.last_time >= self.every_secs
        or (done >= self.total > self.last_logged)
    )
    if not due:
      return
    elapsed = now - self.start
    eta = elapsed / done * (self.total - done) if done else float('nan')
    logging.info(
        '%s: %s/%s%s (%d%%), %s, ETA %s',
        self.what,
        f'{done:,}',
        f'{self.total:,}',
        self.unit,
        100 * done // self.total,
        _format_secs(elapsed),
        _format_secs(eta) if done else '?',
    )
    self.last_logged, self.last_time = done, now
    self.lines += 1
