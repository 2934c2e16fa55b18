"""Evaluators: one module per metric, one registry (`EVALUATORS`).

* `fid`: FID on pytorch-fid's Inception features (needs inception_weights);
* `fcd`: Fréchet Classifier Distance on the Fashion-MNIST LeNet's features;
* `kid`: KID on the data set's feature network (LeNet or Inception);
* `ood`: AUROC of H(x), test split against OOD sets;
* `test_loss`: the mode's loss on the test split (autoencoder).

The training loop and `python -m hatebm_jax.evaluate` both call `build` and
run the evaluators it returns (`common.Evaluator`). A new metric is a module
here with an `Evaluator` subclass, and one line in `EVALUATORS`.
"""

from typing import Optional, Sequence

from absl import logging
from etils import epath
import ml_collections

from hatebm_jax import config_base
from hatebm_jax.evaluation import inception
from hatebm_jax.evaluators import common
from hatebm_jax.evaluators import fcd
from hatebm_jax.evaluators import fid
from hatebm_jax.evaluators import kid
from hatebm_jax.evaluators import ood_auroc
from hatebm_jax.evaluators import test_loss
from hatebm_jax.modes import base

EVALUATORS: dict[str, type[common.Evaluator]] = {
    'fid': fid.FID,
    'fcd': fcd.FCD,
    'kid': kid.KID,
    'ood': ood_auroc.OODAUROC,
    'test_loss': test_loss.TestLoss,
}

Settings = common.Settings
Samples = common.Samples
Evaluator = common.Evaluator


def parse(
    names: str, what: str = 'metrics', allowed: Optional[Sequence[str]] = None
) -> list[str]:
  """'fid,kid' -> ['fid', 'kid'].

  Raises:
    ValueError: for an empty list or a name outside `allowed` (default: the
      names of `EVALUATORS`).
  """
  allowed = list(EVALUATORS if allowed is None else allowed)
  items = [n.strip() for n in str(names).split(',') if n.strip()]
  bad = [n for n in items if n not in allowed]
  if bad or not items:
    raise ValueError(
        f'{what}={names!r}: {bad or "empty"} not allowed; choose from '
        f'{allowed}.'
    )
  return items


def check(
    names: Sequence[str],
    *,
    config: ml_collections.ConfigDict,
    capabilities: base.Capabilities,
) -> None:
  """Each evaluator's `check` on a run of `config`: ValueError naming the
  first metric that cannot evaluate it (before any compute)."""
  for name in names:
    EVALUATORS[name].check(config=config, capabilities=capabilities)


def check_config(
    config: ml_collections.ConfigDict, capabilities: base.Capabilities
) -> None:
  """The evaluation keys' rules, checked by training before any compute:
  `eval_metrics` is 'auto', '' or registered names that can evaluate this
  mode's runs, and the metrics on Inception features have
  `inception_weights`, a file that exists.

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  if config.eval_metrics not in ('auto', ''):
    try:
      names = parse(config.eval_metrics, 'config.eval_metrics')
      check(names, config=config, capabilities=capabilities)
    except ValueError as e:
      raise config_base.invalid('eval_metrics', config.eval_metrics, str(e))
  names, _ = for_training(config, capabilities)
  on_inception = {'fid'} | (
      {'kid'} if config.data_type != 'fashion_mnist' else set()
  )
  needed = sorted(on_inception & set(names))
  get = (
      f"pytorch-fid's {inception.WEIGHTS_FILE}, downloaded once from "
      f'{inception.WEIGHTS_URL}'
  )
  if needed and not config.inception_weights:
    raise config_base.invalid(
        'eval_metrics',
        config.eval_metrics,
        f'{needed} need Inception weights: set inception_weights to the path '
        f'of {get}',
    )
  if needed and not epath.Path(config.inception_weights).exists():
    raise config_base.invalid(
        'inception_weights',
        config.inception_weights,
        f'no such file; give the path of {get} (or its converted .npz)',
    )


def build(
    names: Sequence[str],
    *,
    config: ml_collections.ConfigDict,
    capabilities: base.Capabilities,
    settings: Settings,
) -> list[Evaluator]:
  """The evaluators `names` of a run of `config`, checked, then built
  (loading feature networks and reference statistics).

  Raises:
    ValueError: from `check`.
    FileNotFoundError: for missing data or Inception weights.
  """
  check(names, config=config, capabilities=capabilities)
  return [EVALUATORS[n](config=config, settings=settings) for n in names]


def for_training(
    config: ml_collections.ConfigDict, capabilities: base.Capabilities
) -> tuple[list[str], Optional[str]]:
  """The metrics evaluated during training, and a note on what is off.

  `config.eval_metrics`: a comma-separated list, '' for none, or 'auto':
  the test loss where the mode has one; FCD and KID for Fashion-MNIST; FID
  and KID for the other data sets when `config.inception_weights` is given
  (else the note says how to turn them on). None when `eval_freq` is 0.
  """
  if not config.eval_freq:
    return [], None
  if config.eval_metrics != 'auto':
    return (
        parse(config.eval_metrics, 'config.eval_metrics')
        if config.eval_metrics
        else []
    ), None
  names = ['test_loss'] if capabilities.test_loss else []
  if config.data_type == 'fashion_mnist':
    return names + ['fcd', 'kid'], None
  if config.inception_weights:
    return names + ['fid', 'kid'], None
  return names, (
      'FID is off during training: pass --config.inception_weights=PATH '
      f"(pytorch-fid's {inception.WEIGHTS_FILE}, from "
      f'{inception.WEIGHTS_URL}) to log FID and KID of '
      f'{config.eval_num_samples:,} samples every {config.eval_freq:,} '
      'steps.'
  )


def run_all(
    evaluators: Sequence[Evaluator],
    *,
    samples: Samples,
    sources: Sequence[str],
) -> tuple[
    dict[str, dict[str, float]], list[tuple[Evaluator, dict[str, float]]]
]:
  """Runs each evaluator on `samples`: ({source: values of the per-source
  evaluators}, [(evaluator, values)] of the per-run ones)."""
  per_source = {s: {} for s in sources}
  per_run = []
  for evaluator in evaluators:
    if evaluator.per_source:
      for source in sources:
        per_source[source].update(evaluator(samples=samples, source=source))
    else:
      per_run.append((evaluator, evaluator(samples=samples)))
    logging.debug('evaluated %s', evaluator.name)
  return per_source, per_run
