"""Differential privacy for the released generator: the budget of DP-SGD
and the noisy release of the users' features.

DP-SGD (Abadi et al. 2016) here is user-level: every step samples each
training user independently with probability q (Poisson sampling), clips
each sampled user's discriminator gradient to norm C, sums, adds Gaussian
noise of standard deviation sigma * C and divides by the expected batch.
`epsilon_spent` counts what T such steps cost with dp-accounting's RDP
accountant (Mironov et al. 2019), `calibrate_noise` inverts it: the sigma
that spends a target epsilon. A step of `d` discriminator updates on one
sample is d Gaussian mechanisms on it, which the accountant treats, as for
any composition of Gaussians, as one with sigma / sqrt(d).

The training step has a fixed number of slots for sampled users
(`capacity`): the rare Poisson samples larger than that are cut to a
uniformly random subset. Where the cut and the uncut mechanism differ has
probability at most T * P(Binomial(N + 1, q) > capacity) on a data set or
its neighbour, which adds (1 + e^eps) times that to delta (a coupling
argument); `plan` picks a capacity that keeps it below 1% of delta and the
reported delta includes it.

The synthetic users' features come from `noisy_marginals`: per column, the
count of each value plus Laplace noise, values released only above a
threshold (the set of values is itself private: Korolova et al. 2009), each
column spending an equal share of (eps, delta); basic composition adds the
columns, and the features and the model.

>>> sigma = calibrate_noise(3.0, 0.01, 1000, 1e-5)
>>> 0.99 * 3.0 <= epsilon_spent(sigma, 0.01, 1000, 1e-5) <= 3.0
True
"""
import collections
import dataclasses
import logging
import math
from typing import Dict, Optional

import numpy as np
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats

from tfgan_rec.config import PrivacyConfig
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.errors import InputError

# The accountant warns about orders it cannot evaluate (it leaves them out of
# the minimum, which stays a valid bound); the warnings would repeat on each
# of the bisection's calls.
logging.getLogger("absl").addFilter(
    lambda record: "failed to converge" not in record.getMessage())

# The calibrated sigma spends between (1 - TOLERANCE) * epsilon and epsilon.
TOLERANCE = 0.01
# Share of the model's delta that the cut of oversized samples may take.
OVERFLOW_SHARE = 0.01


def dp_sgd_event(noise_multiplier: float, sampling_rate: float, steps: int,
                 updates_per_step: int = 1) -> dp_event.DpEvent:
  """The DpEvent of `steps` Poisson-sampled steps, each making
  `updates_per_step` Gaussian releases on its sample."""
  gaussian = dp_event.GaussianDpEvent(noise_multiplier)
  if updates_per_step > 1:
    gaussian = dp_event.SelfComposedDpEvent(gaussian, updates_per_step)
  return dp_event.SelfComposedDpEvent(
      dp_event.PoissonSampledDpEvent(sampling_rate, gaussian), steps)


def epsilon_spent(noise_multiplier: float, sampling_rate: float, steps: int,
                  delta: float, updates_per_step: int = 1) -> float:
  """Epsilon of DP-SGD at `delta` (RDP accountant; inf without noise).

  Args:
    noise_multiplier: sigma, the noise's standard deviation over the clip
      norm.
    sampling_rate: q, the probability that a user is in a step's sample.
    steps: T, the steps taken.
    delta: the delta of the guarantee.
    updates_per_step: discriminator updates on each step's sample.

  Returns:
    The smallest epsilon the accountant proves.
  """
  if noise_multiplier <= 0:
    return math.inf
  accountant = rdp_privacy_accountant.RdpAccountant()
  accountant.compose(dp_sgd_event(noise_multiplier, sampling_rate, steps,
                                  updates_per_step))
  return float(accountant.get_epsilon(delta))


def calibrate_noise(target_epsilon: float, sampling_rate: float, steps: int,
                    delta: float, updates_per_step: int = 1) -> float:
  """The noise multiplier whose `epsilon_spent` is within TOLERANCE below
  `target_epsilon`, by bisection (epsilon falls as sigma grows).

  Returns:
    sigma with (1 - TOLERANCE) * target <= epsilon_spent(sigma) <= target.
  """
  spent = lambda sigma: epsilon_spent(sigma, sampling_rate, steps, delta,
                                      updates_per_step)
  low, high = 0.1, 1.0
  while spent(high) > target_epsilon:
    low, high = high, high * 2
    if high > 1e6:
      raise InputError(f"no noise reaches epsilon {target_epsilon:g} at delta "
                       f"{delta:g}; raise --dp-epsilon or --dp-delta.")
  while spent(low) < target_epsilon and low > 1e-3:
    low /= 2
  for _ in range(100):
    if spent(high) >= (1 - TOLERANCE) * target_epsilon:
      return high
    middle = math.sqrt(low * high)
    if spent(middle) > target_epsilon:
      low = middle
    else:
      high = middle
  return high


def overflow_probability(capacity: int, population: int,
                         sampling_rate: float) -> float:
  """P(a Poisson sample of `population` + 1 users, the larger neighbour,
  holds more than `capacity`)."""
  return float(stats.binom.sf(capacity, population + 1, sampling_rate))


def capacity_for(expected: int, population: int, steps: int,
                 epsilon: float, budget: float, multiple: int = 1) -> int:
  """The fewest slots (a multiple of `multiple`) whose overflow term
  steps * (1 + e^eps) * P(overflow) stays within `budget`; at most the
  population rounded down to a multiple (the overflow term is then
  included whatever its size)."""
  rate = expected / population
  factor = steps * (1 + math.exp(min(epsilon, 700)))
  capacity = max(multiple, -(-expected // multiple) * multiple)
  most = max(multiple, population - population % multiple)
  while capacity < most and (
      factor * overflow_probability(capacity, population, rate) > budget):
    capacity += multiple
  return min(capacity, most)


@dataclasses.dataclass
class PrivacyPlan:
  """How a private generator is trained and what it spends.

  `epsilon`/`delta` are the totals (model plus features, basic
  composition); `model_delta` includes the overflow term."""
  epsilon: float
  delta: float
  model_epsilon: float
  model_delta: float
  feature_epsilon: float
  feature_delta: float
  noise_multiplier: float
  clip_norm: float
  sampling_rate: float
  expected_batch: int
  capacity: int
  steps: int
  updates_per_step: int
  users: int

  def to_dict(self) -> dict:
    return {"private": True, **dataclasses.asdict(self)}


def plan(config: PrivacyConfig, users: int, expected_batch: int, steps: int,
         updates_per_step: int, replicas: int = 1) -> PrivacyPlan:
  """Splits the budget between the features and the model, calibrates
  sigma for the model's share and sizes the step's slots.

  Args:
    config: the target (dp_epsilon, dp_delta, clip norm, feature share).
    users: N, the training users (the sampling population).
    expected_batch: users per step on average (q = expected_batch / N).
    steps: T.
    updates_per_step: discriminator updates per step.
    replicas: the slots divide by it.

  Returns:
    The plan, with the epsilon and delta actually spent.
  """
  if expected_batch > users:
    raise InputError(f"--gan-batch-size {expected_batch} exceeds the "
                     f"{users} training users; lower it.")
  share = config.feature_share
  model_epsilon, model_delta = (1 - share) * config.epsilon, (
      1 - share) * config.delta
  rate = expected_batch / users
  sigma = calibrate_noise(model_epsilon, rate, steps,
                          (1 - OVERFLOW_SHARE) * model_delta, updates_per_step)
  spent = epsilon_spent(sigma, rate, steps, (1 - OVERFLOW_SHARE) * model_delta,
                        updates_per_step)
  capacity = capacity_for(expected_batch, users, steps, spent,
                          OVERFLOW_SHARE * model_delta, replicas)
  overflow = steps * (1 + math.exp(min(spent, 700))) * overflow_probability(
      capacity, users, rate)
  spent_delta = (1 - OVERFLOW_SHARE) * model_delta + overflow
  return PrivacyPlan(
      spent + share * config.epsilon, spent_delta + share * config.delta,
      spent, spent_delta, share * config.epsilon, share * config.delta, sigma,
      config.clip_norm, rate, expected_batch, capacity, steps,
      updates_per_step, users)


# --- the users' features -----------------------------------------------------

@dataclasses.dataclass
class Marginals:
  """Per column, the released values and their (noisy) counts, and the
  column's kind. Columns with no value released are left out."""
  counts: Dict[str, Dict[str, float]]
  kinds: Dict[str, str]

  def sample(self, count: int, rng: np.random.Generator) -> FeatureTable:
    """`count` synthetic users, each column drawn independently from its
    marginal (row 0, the unknown user, is "")."""
    table = FeatureTable()
    for name, values in self.counts.items():
      weights = np.array(list(values.values()), np.float64)
      drawn = rng.choice(np.array(list(values), dtype=object), size=count,
                         p=weights / weights.sum())
      table.columns[name] = np.concatenate([[""], drawn]).astype(object)
      table.kinds[name] = self.kinds[name]
    return table


def threshold(epsilon: float, delta: float) -> float:
  """The noisy count above which a value is released: a value only one
  user holds passes with probability at most `delta` (Laplace tail)."""
  return 1.0 + math.log(1.0 / (2.0 * delta)) / epsilon


def noisy_marginals(table: FeatureTable, users: np.ndarray, epsilon: float,
                    delta: float, rng: np.random.Generator) -> Marginals:
  """The (eps, delta)-DP per-column value counts of `users`' features.

  Each user holds one value per column, so a column's counts have L1
  sensitivity 1: Laplace(1 / eps_c) noise on each count and the threshold
  for values of unknown domain make each column (eps_c, delta_c)-DP, with
  eps_c, delta_c = eps, delta divided by the columns. eps = inf releases
  the exact counts (not private).

  Args:
    table: the real features (row i = user i).
    users: the users counted (the training users).
    epsilon, delta: the budget of all columns together.
    rng: the noise's source (secret for a private release).

  Returns:
    The released `Marginals`.
  """
  columns = len(table.columns) or 1
  eps_c, delta_c = epsilon / columns, delta / columns
  released = Marginals({}, {})
  for name, column in table.columns.items():
    counts = collections.Counter(column[users])
    values = sorted(counts)
    noisy = np.array([counts[v] for v in values], np.float64)
    if math.isfinite(epsilon):
      noisy = noisy + rng.laplace(0.0, 1.0 / eps_c, size=len(values))
      keep = noisy > threshold(eps_c, delta_c)
    else:
      keep = noisy > 0
    if keep.any():
      released.counts[name] = {v: float(c) for v, c, k in
                               zip(values, noisy, keep) if k}
      released.kinds[name] = table.kinds[name]
  return released


def not_private(steps: int, users: int) -> dict:
  """What privacy.json says for a generator trained without DP."""
  return {"private": False, "epsilon": "inf", "steps": steps,
          "users": users, "note": "not private: trained without "
          "differential privacy on the real users' features and "
          "interactions"}


def describe(privacy: Optional[dict]) -> str:
  """One line for reports."""
  if not privacy:
    return "no release generator"
  if not privacy.get("private"):
    return "release generator trained without differential privacy"
  return (f"release generator: ({privacy['epsilon']:.3g}, "
          f"{privacy['delta']:.3g})-DP per user (model "
          f"{privacy['model_epsilon']:.3g}, features "
          f"{privacy['feature_epsilon']:.3g}); sigma "
          f"{privacy['noise_multiplier']:.3g}, clip "
          f"{privacy['clip_norm']:g}, q {privacy['sampling_rate']:.3g}, "
          f"{privacy['steps']} steps")
