"""Differential privacy for the released generator: the budget of DP-SGD
and the noisy releases of the users' features, profile lengths and item
popularity.

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
column spending an equal share of (eps, delta); their profile lengths from
`noisy_lengths`, a Laplace histogram on public bins (LENGTH_SHARE of the
features' budget). Basic composition adds the columns, the lengths, and
the features and the model. The model's part also pays for the item
popularity the generator starts from (`noisy_popularity`, one Gaussian
mechanism, composed with DP-SGD in the RDP account).

>>> sigma = calibrate_noise(3.0, 0.01, 1000, 1e-5)
>>> 0.99 * 3.0 <= epsilon_spent(sigma, 0.01, 1000, 1e-5) <= 3.0
True
"""
import collections
import dataclasses
import logging
import math
from typing import Dict, List, Optional

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
# Share of the features' budget (`feature_share`) spent on the profile
# lengths, the rest on the feature columns. The synthetic users' lengths
# decide how many items each draws, which a recommender fitted on them
# reads; the features only condition the generator. On MovieLens 100K at
# total epsilon 3 half the share (eps 0.15) gave synthetic profiles of
# mean 60, median 24.5 (real: 63, 29.5); simulated with a fifth (eps
# 0.06), the mean was 91 +- 30 (50 draws).
LENGTH_SHARE = 0.5
# The lengths' public bins: one per length up to 6, then each about 1.25
# times the last (30 bins for 1,682 items). In the same simulation at eps
# 0.06: Kolmogorov-Smirnov distance 0.08 to the real lengths, 0.16 with
# bins growing 1.5 times (they merge 4-5 items, where MovieLens' sparse
# users all sit at 5).
LENGTH_RATIO = 1.25
# The item popularity's noise is calibrated so that, released alone, it
# would spend this share of the model's epsilon (composed with DP-SGD in
# one RDP account it costs less).
POPULARITY_SHARE = 0.3


def dp_sgd_event(noise_multiplier: float, sampling_rate: float, steps: int,
                 updates_per_step: int = 1,
                 popularity_noise: float = 0.0) -> dp_event.DpEvent:
  """The DpEvent of `steps` Poisson-sampled steps, each making
  `updates_per_step` Gaussian releases on its sample, and, with
  `popularity_noise`, the one Gaussian release of the item popularity
  (`noisy_popularity`)."""
  gaussian = dp_event.GaussianDpEvent(noise_multiplier)
  if updates_per_step > 1:
    gaussian = dp_event.SelfComposedDpEvent(gaussian, updates_per_step)
  event = dp_event.SelfComposedDpEvent(
      dp_event.PoissonSampledDpEvent(sampling_rate, gaussian), steps)
  if popularity_noise > 0:
    event = dp_event.ComposedDpEvent(
        [event, dp_event.GaussianDpEvent(popularity_noise)])
  return event


def epsilon_spent(noise_multiplier: float, sampling_rate: float, steps: int,
                  delta: float, updates_per_step: int = 1,
                  popularity_noise: float = 0.0) -> float:
  """Epsilon of DP-SGD at `delta` (RDP accountant; inf without noise).

  Args:
    noise_multiplier: sigma, the noise's standard deviation over the clip
      norm.
    sampling_rate: q, the probability that a user is in a step's sample.
    steps: T, the steps taken.
    delta: the delta of the guarantee.
    updates_per_step: discriminator updates on each step's sample.
    popularity_noise: the item popularity's noise multiplier (0: not
      released).

  Returns:
    The smallest epsilon the accountant proves.
  """
  if noise_multiplier <= 0:
    return math.inf
  accountant = rdp_privacy_accountant.RdpAccountant()
  accountant.compose(dp_sgd_event(noise_multiplier, sampling_rate, steps,
                                  updates_per_step, popularity_noise))
  return float(accountant.get_epsilon(delta))


def calibrate_noise(target_epsilon: float, sampling_rate: float, steps: int,
                    delta: float, updates_per_step: int = 1,
                    popularity_noise: float = 0.0) -> float:
  """The noise multiplier whose `epsilon_spent` is within TOLERANCE below
  `target_epsilon`, by bisection (epsilon falls as sigma grows).

  Returns:
    sigma with (1 - TOLERANCE) * target <= epsilon_spent(sigma) <= target.
  """
  spent = lambda sigma: epsilon_spent(sigma, sampling_rate, steps, delta,
                                      updates_per_step, popularity_noise)
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
  composition); `model_delta` includes the overflow term. The model's
  part is DP-SGD (`noise_multiplier`) and the item popularity
  (`popularity_noise`), composed in one RDP account. The features' part
  (`feature_epsilon`, `feature_delta`) includes the profile-length
  histogram's `length_epsilon` (which spends no delta)."""
  epsilon: float
  delta: float
  model_epsilon: float
  model_delta: float
  feature_epsilon: float
  feature_delta: float
  length_epsilon: float
  noise_multiplier: float
  popularity_noise: float
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
  delta = (1 - OVERFLOW_SHARE) * model_delta
  # Alone, the popularity would spend POPULARITY_SHARE of the model's
  # epsilon; composed with DP-SGD it costs less.
  popularity = calibrate_noise(POPULARITY_SHARE * model_epsilon, 1.0, 1,
                               delta)
  sigma = calibrate_noise(model_epsilon, rate, steps, delta, updates_per_step,
                          popularity)
  spent = epsilon_spent(sigma, rate, steps, delta, updates_per_step,
                        popularity)
  capacity = capacity_for(expected_batch, users, steps, spent,
                          OVERFLOW_SHARE * model_delta, replicas)
  overflow = steps * (1 + math.exp(min(spent, 700))) * overflow_probability(
      capacity, users, rate)
  spent_delta = delta + overflow
  return PrivacyPlan(
      epsilon=spent + share * config.epsilon,
      delta=spent_delta + share * config.delta, model_epsilon=spent,
      model_delta=spent_delta, feature_epsilon=share * config.epsilon,
      feature_delta=share * config.delta,
      length_epsilon=LENGTH_SHARE * share * config.epsilon,
      noise_multiplier=sigma, popularity_noise=popularity,
      clip_norm=config.clip_norm, sampling_rate=rate,
      expected_batch=expected_batch, capacity=capacity, steps=steps,
      updates_per_step=updates_per_step, users=users)


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


# --- the items' popularity --------------------------------------------------

def noisy_popularity(items: np.ndarray, splits: np.ndarray,
                     users: np.ndarray, num_items: int,
                     noise_multiplier: float,
                     rng: np.random.Generator) -> np.ndarray:
  """The Gaussian-mechanism release of the item popularity, [num_items + 1]
  (entry 0, the padding item, unused).

  User u adds 1 / sqrt(|items of u|) to each of their items: their
  contribution has L2 norm 1, the sensitivity, so N(0, noise_multiplier^2)
  noise on each item is a Gaussian mechanism the accountant counts
  (`dp_sgd_event`). noise_multiplier 0: the exact weighted counts (not
  private).

  Args:
    items, splits: each user's items, ragged (flat values, row splits).
    users: the users counted (the training users).
    num_items: the catalogue's size.
    noise_multiplier: the noise's standard deviation.
    rng: the noise's source (secret for a private release).
  """
  owner = np.repeat(np.arange(len(splits) - 1), np.diff(splits))
  # One entry per (user, item): a repeated interaction (CSV logs may hold
  # them) would give the user's row a norm above the sensitivity.
  pairs = np.unique(np.stack([owner, items], 1)[np.isin(owner, users)],
                    axis=0)
  distinct = np.bincount(pairs[:, 0], minlength=len(splits) - 1)
  popularity = np.bincount(pairs[:, 1], 1.0 / np.sqrt(distinct[pairs[:, 0]]),
                           minlength=num_items + 1)
  if noise_multiplier > 0:
    popularity = popularity + rng.normal(0.0, noise_multiplier,
                                         popularity.shape)
  return popularity


def prior_logits(popularity: np.ndarray, noise_multiplier: float
                 ) -> np.ndarray:
  """Log item probabilities [num_items + 1] from the released popularity
  (post-processing): items above twice the noise keep their value, the
  others share the mean of theirs (an unbiased estimate of their total; at
  epsilon 3 on MovieLens 100K about 230 items are kept, and the ~1,450
  others, each floored at the noise instead, would take most of the
  mass), at least 1e-3 of the smallest kept value. Entry 0 (the padding
  item) is 0."""
  values = popularity[1:]
  kept = values > 2.0 * noise_multiplier
  smallest = values[kept].min() if kept.any() else 1.0
  tail = max(values[~kept].mean() if (~kept).any() else 0.0,
             1e-3 * smallest)
  weights = np.where(kept, values, tail)
  return np.concatenate([[0.0], np.log(weights / weights.sum())])


# --- the users' profile lengths ---------------------------------------------

@dataclasses.dataclass
class Lengths:
  """The released histogram of profile lengths: bin b holds the lengths
  lower[b] .. lower[b + 1] - 1 (the last bin up to `most`), with the
  (noisy) share `counts[b]`; a length is drawn as a bin, then uniformly in
  it."""
  lower: List[int]
  counts: List[float]
  most: int

  def bounds(self) -> tuple:
    """(first, last) length of each bin, int arrays."""
    lower = np.asarray(self.lower, np.int64)
    return lower, np.append(lower[1:] - 1, self.most)

  def probabilities(self) -> np.ndarray:
    counts = np.asarray(self.counts, np.float64)
    return counts / counts.sum()

  def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` lengths, int [count]."""
    first, last = self.bounds()
    bins = rng.choice(len(first), size=count, p=self.probabilities())
    return rng.integers(first[bins], last[bins] + 1)


def length_bins(most: int) -> List[int]:
  """The public bins' first lengths, 1 .. at most `most` (LENGTH_RATIO)."""
  lower = [1]
  while True:
    following = max(lower[-1] + 1, int(round(lower[-1] * LENGTH_RATIO)))
    if following > most:
      return lower
    lower.append(following)


def noisy_lengths(lengths: np.ndarray, most: int, epsilon: float,
                  rng: np.random.Generator) -> Lengths:
  """The epsilon-DP histogram of the users' profile `lengths` (1..`most`).

  The bins are public (`length_bins`) and each user is in one, so the
  counts have L1 sensitivity 1: Laplace(1 / epsilon) noise on each makes
  them epsilon-DP (delta 0). Then post-processing: counts below 1 /
  epsilon, which noise alone reaches often, are set to 0 (without it the
  many empty long bins get noise mass that drew synthetic profiles of
  hundreds of items; simulated on MovieLens 100K at epsilon 0.06: mean
  length 108 against 91 with it, the real being 63); if none is left, all
  bins weigh the same. epsilon = inf releases the exact counts.

  Args:
    lengths: the training users' profile lengths, int [users].
    most: the longest possible profile (the catalogue's size, public).
    epsilon: the budget.
    rng: the noise's source (secret for a private release).

  Returns:
    The released `Lengths`.
  """
  lower = length_bins(most)
  bins = np.searchsorted(lower, np.clip(lengths, 1, most), side="right") - 1
  counts = np.bincount(bins, minlength=len(lower)).astype(np.float64)
  if math.isfinite(epsilon):
    counts = counts + rng.laplace(0.0, 1.0 / epsilon, size=len(lower))
    counts = np.where(counts > 1.0 / epsilon, counts, 0.0)
  if not counts.any():
    counts = np.ones(len(lower))
  return Lengths(lower, counts.tolist(), most)


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
          f"{privacy['model_epsilon']:.3g}, with item popularity at noise "
          f"{privacy.get('popularity_noise', 0):.3g}; features "
          f"{privacy['feature_epsilon']:.3g}, of which profile lengths "
          f"{privacy.get('length_epsilon', 0):.3g}); sigma "
          f"{privacy['noise_multiplier']:.3g}, clip "
          f"{privacy['clip_norm']:g}, q {privacy['sampling_rate']:.3g}, "
          f"{privacy['steps']} steps")
