"""A GAN-guided KerasTuner oracle: a generator proposes architectures, a
discriminator trained on the evaluated ones judges them.

Every configuration of the search space is encoded as one vector: a one-hot
block per choice (booleans are the choice False/True) and, per number, its
position in [0, 1] on the hyperparameter's own scale
(`value_to_prob`: log ranges stay log, steps stay steps). For each new
trial, once `initial_trials` trials have finished (the warm-up, which
proposes at random as RandomSearch does):

- the finished trials are split by the objective into good (the best
  `top_fraction`, at least one) and the rest;
- a small generator (noise -> MLP -> per block a Gumbel-softmax one-hot,
  straight-through, or a sigmoid) and a small discriminator (encoding ->
  MLP -> logit) are trained from fresh seeded weights for `steps` Adam
  steps: the discriminator tells the good encodings (label 1) from the
  rest and from the generator's samples (label 0), the generator learns to
  make samples it calls good (GA-NAS, Rezaei et al., ICML 2021, trains the
  same pair with the top architectures as the real data);
- the generator draws `proposals` encodings, in which each hyperparameter
  is redrawn at random at a rate of 0, 1/4 or 1/2 (`MUTATION_RATES`, in
  turn); each is decoded to values inside the space and encoded again, the
  discriminator scores that encoding, and the best-scored configuration not
  tried before is the trial's. If every proposal was tried, the trial is a
  random one.

The networks are rebuilt from the seed and the finished trials at every
proposal, so the oracle's state is what KerasTuner already saves (trials,
seed, tried configurations) plus its settings and which trials the GAN
proposed: a tuner reloaded from its project folder proposes what the
uninterrupted one would have.
"""
import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import keras_tuner as kt
import numpy as np
import tensorflow as tf
from keras_tuner.engine import hyperparameters as hp_types

# The warm-up: random trials before the GAN has anything to learn from.
INITIAL_TRIALS = 5
# Proposals are generated encodings in which each hyperparameter is redrawn
# at random at these rates in turn: trained on a handful of trials the
# generator collapses onto the best ones, already tried (after the 3
# warm-up trials of tests/test_gan_oracle.py, trained 100 steps, all 32
# unmutated proposals were one tried configuration), so their neighbours
# are what the discriminator gets to judge.
MUTATION_RATES = (0.0, 0.25, 0.5)
TrialStatus = kt.engine.trial.TrialStatus
Trial = kt.engine.trial.Trial


@dataclasses.dataclass(frozen=True)
class Block:
  """Where one hyperparameter sits in the encoding.

  Attributes:
    name: the hyperparameter.
    start: its first column.
    size: its columns (the choices, or 1 for a number).
    choices: the values of a choice or boolean; None for a number.
  """
  name: str
  start: int
  size: int
  choices: Optional[Tuple] = None


class Encoding:
  """Vectors <-> values of a KerasTuner search space (see module docstring).

  Fixed hyperparameters take no column; hyperparameters inactive under
  their conditions are encoded by their default, as the Bayesian oracle
  does.

  Args:
    space: the `kt.HyperParameters` searched.
  """

  def __init__(self, space: kt.HyperParameters):
    self.space = space
    self.blocks: List[Block] = []
    start = 0
    for hp in space.space:
      if isinstance(hp, hp_types.Fixed):
        continue
      choices = _choices(hp)
      size = len(choices) if choices is not None else 1
      self.blocks.append(Block(hp.name, start, size, choices))
      start += size
    self.dim = start
    self._by_name = {hp.name: hp for hp in space.space}

  @property
  def layout(self) -> Tuple[Tuple[int, bool], ...]:
    """(size, is a choice) per block: what the networks' shapes follow."""
    return tuple((b.size, b.choices is not None) for b in self.blocks)

  def encode(self, values: Dict[str, object]) -> np.ndarray:
    """The float32 [dim] encoding of a configuration."""
    vector = np.zeros(self.dim, np.float32)
    for block in self.blocks:
      hp = self._by_name[block.name]
      value = values.get(block.name, hp.default)
      if block.choices is None:
        vector[block.start] = hp.value_to_prob(value)
      else:
        vector[block.start + block.choices.index(value)] = 1.0
    return vector

  def mutate(self, vectors: np.ndarray, rates: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """`vectors` [n, dim] with each block of row r redrawn uniformly (a
    random one-hot, or a position in [0, 1)) with probability rates[r]."""
    vectors = np.array(vectors, np.float32)
    for block in self.blocks:
      redraw = rng.random(len(vectors)) < rates
      cells = np.zeros((len(vectors), block.size), np.float32)
      if block.choices is None:
        cells[:, 0] = rng.random(len(vectors))
      else:
        cells[np.arange(len(vectors)),
              rng.integers(0, block.size, len(vectors))] = 1.0
      vectors[redraw, block.start:block.start + block.size] = cells[redraw]
    return vectors

  def decode(self, vector: np.ndarray) -> Dict[str, object]:
    """The configuration nearest to `vector`: each choice block's largest
    entry, each number's position clipped into the range; only active
    hyperparameters are returned (as KerasTuner records them)."""
    hps = kt.HyperParameters()
    blocks = {b.name: b for b in self.blocks}
    for hp in self.space.space:
      hps.merge([hp])
      if not hps.is_active(hp):
        continue
      block = blocks.get(hp.name)
      if block is None:
        hps.values[hp.name] = hp.value
        continue
      cells = vector[block.start:block.start + block.size]
      if block.choices is None:
        hps.values[hp.name] = hp.prob_to_value(
            float(np.clip(cells[0], 0.0, 1.0 - 1e-6)))
      else:
        hps.values[hp.name] = block.choices[int(np.argmax(cells))]
    return hps.values


def _choices(hp) -> Optional[Tuple]:
  if isinstance(hp, hp_types.Boolean):
    return (False, True)
  if isinstance(hp, hp_types.Choice):
    return tuple(hp.values)
  return None


def _dense_shapes(sizes: Sequence[int]) -> List[Tuple[int, ...]]:
  shapes = []
  for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
    shapes += [(fan_in, fan_out), (fan_out,)]
  return shapes


def _mlp(x: tf.Tensor, variables: Sequence[tf.Variable]) -> tf.Tensor:
  """Dense layers (ReLU between them) over (kernel, bias) pairs."""
  for index in range(0, len(variables), 2):
    x = tf.matmul(x, variables[index]) + variables[index + 1]
    if index + 2 < len(variables):
      x = tf.nn.relu(x)
  return x


def _glorot(rng: np.random.Generator, shape: Tuple[int, ...]) -> np.ndarray:
  if len(shape) == 1:
    return np.zeros(shape, np.float32)
  limit = math.sqrt(6.0 / sum(shape))
  return rng.uniform(-limit, limit, shape).astype(np.float32)


def _mean(x: tf.Tensor) -> tf.Tensor:
  """The mean, 0 for no entries (there may be no "rest" trials)."""
  return tf.reduce_sum(x) / tf.maximum(tf.cast(tf.size(x), tf.float32), 1.0)


class ProposalGAN:
  """The generator and discriminator over the encodings of one layout.

  The variables and the traced functions are made once per layout and
  outlive proposals; `fit` first re-initialises every variable from its
  random generator, so a fit depends on its inputs and that generator only.
  Adam is written out (4 lines) because a Keras optimizer's slots would
  need the same reset and are created inside its first traced call.

  Args:
    layout: `Encoding.layout`, (size, is a choice) per block.
    noise_dim: the generator's noise.
    hidden: units of each hidden layer.
    steps: training steps per fit (each one discriminator and one
      generator update).
    batch_size: generated samples per step.
    learning_rate: Adam's, for both networks.
  """

  def __init__(self, layout: Tuple[Tuple[int, bool], ...], noise_dim: int = 8,
               hidden: int = 32, steps: int = 300, batch_size: int = 64,
               learning_rate: float = 5e-3):
    self.layout, self.noise_dim, self.steps = layout, noise_dim, steps
    self.batch_size, self.learning_rate = batch_size, learning_rate
    self.dim = sum(size for size, _ in layout)
    self.generator = [tf.Variable(tf.zeros(shape)) for shape in
                      _dense_shapes([noise_dim, hidden, hidden, self.dim])]
    self.discriminator = [tf.Variable(tf.zeros(shape)) for shape in
                          _dense_shapes([self.dim, hidden, 1])]
    self.slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v)))
                  for v in self.generator + self.discriminator]
    encodings = tf.TensorSpec([None, self.dim], tf.float32)
    seed = tf.TensorSpec([2], tf.int64)
    self._fit = tf.function(self._fit_steps,
                            input_signature=[encodings, encodings, seed])
    self._generate = tf.function(
        self._samples, input_signature=[tf.TensorSpec([], tf.int32), seed])
    self._judge = tf.function(self._logits, input_signature=[encodings])

  def fit(self, good: np.ndarray, rest: np.ndarray,
          rng: np.random.Generator) -> None:
    """Trains both networks from fresh weights drawn from `rng`: good
    encodings [n, dim] against the rest [m, dim] and the generated ones."""
    for variable in self.generator + self.discriminator:
      variable.assign(_glorot(rng, tuple(variable.shape)))
    for first, second in self.slots:
      first.assign(tf.zeros_like(first))
      second.assign(tf.zeros_like(second))
    self._fit(tf.constant(good, tf.float32), tf.constant(rest, tf.float32),
              tf.constant(rng.integers(0, 2**31, 2), tf.int64))

  def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` generated encodings [count, dim] (choices one-hot)."""
    return self._generate(
        tf.constant(count, tf.int32),
        tf.constant(rng.integers(0, 2**31, 2), tf.int64)).numpy()

  def score(self, encodings: np.ndarray) -> np.ndarray:
    """The discriminator's probability that each encoding is good."""
    return tf.sigmoid(self._judge(tf.constant(encodings, tf.float32))
                      ).numpy()[:, 0]

  def _logits(self, encodings: tf.Tensor) -> tf.Tensor:
    return _mlp(encodings, self.discriminator)

  def _samples(self, count: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Generated encodings: per choice block a straight-through
    Gumbel-softmax one-hot (exactly one-hot forward, the softmax's gradient
    backward), per number a sigmoid."""
    noise_seed, gumbel_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    noise = tf.random.stateless_normal([count, self.noise_dim], noise_seed)
    logits = _mlp(noise, self.generator)
    uniform = tf.random.stateless_uniform(tf.shape(logits), gumbel_seed,
                                          minval=1e-6, maxval=1.0 - 1e-6)
    perturbed = logits - tf.math.log(-tf.math.log(uniform))
    blocks, start = [], 0
    for size, is_choice in self.layout:
      if is_choice:
        soft = tf.nn.softmax(perturbed[:, start:start + size])
        hard = tf.one_hot(tf.argmax(soft, -1), size)
        blocks.append(hard + soft - tf.stop_gradient(soft))
      else:
        blocks.append(tf.sigmoid(logits[:, start:start + size]))
      start += size
    return tf.concat(blocks, -1)

  def _fit_steps(self, good: tf.Tensor, rest: tf.Tensor,
                 seed: tf.Tensor) -> None:
    for step in tf.range(self.steps):
      step_seed = tf.random.experimental.stateless_fold_in(seed, step)
      t = tf.cast(step + 1, tf.float32)
      fake = self._samples(tf.constant(self.batch_size), step_seed)
      with tf.GradientTape() as tape:
        d_loss = (_mean(tf.nn.softplus(-self._logits(good))) + 0.5 * (
            _mean(tf.nn.softplus(self._logits(rest))) +
            _mean(tf.nn.softplus(self._logits(tf.stop_gradient(fake))))))
      self._adam(tape.gradient(d_loss, self.discriminator),
                 self.discriminator, len(self.generator), t)
      with tf.GradientTape() as tape:
        fake = self._samples(tf.constant(self.batch_size), step_seed)
        g_loss = _mean(tf.nn.softplus(-self._logits(fake)))
      self._adam(tape.gradient(g_loss, self.generator), self.generator, 0,
                 t)

  def _adam(self, gradients, variables, first_slot: int,
            t: tf.Tensor) -> None:
    """Adam's update number `t` of `variables`, whose moments are the
    slots from `first_slot` on."""
    rate = self.learning_rate * tf.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t)
    for index, (gradient, variable) in enumerate(zip(gradients, variables)):
      m, v = self.slots[first_slot + index]
      m.assign(0.9 * m + 0.1 * gradient)
      v.assign(0.999 * v + 0.001 * tf.square(gradient))
      variable.assign_sub(rate * m / (tf.sqrt(v) + 1e-7))


# Tracing ProposalGAN's training loop took ~2 s, its 300 steps ~0.3 s
# (measured on 2 busy cores), and `fit` re-initialises every variable, so
# the oracles of one process (a reloaded one, the tests') share one per
# layout and step count. Oracles are not run concurrently in threads.
_NETWORKS: Dict[Tuple, ProposalGAN] = {}


def networks(layout: Tuple[Tuple[int, bool], ...], steps: int) -> ProposalGAN:
  """This process's `ProposalGAN` for `layout` and `steps`."""
  if (layout, steps) not in _NETWORKS:
    _NETWORKS[layout, steps] = ProposalGAN(layout, steps=steps)
  return _NETWORKS[layout, steps]


class GANOracle(kt.Oracle):
  """Proposes each trial by the GAN of the module docstring.

  Args:
    objective, max_trials, seed, hyperparameters, allow_new_entries,
      tune_new_entries, max_retries_per_trial,
      max_consecutive_failed_trials: as for `kt.oracles.RandomSearchOracle`.
    initial_trials: finished trials before the GAN proposes (until then
      proposals are random).
    top_fraction: the share of finished trials the discriminator learns as
      good (at least one).
    proposals: generated configurations scored per trial.
    steps: training steps of the GAN per trial.
  """

  def __init__(self, objective=None, max_trials: int = 10,
               seed: Optional[int] = None, hyperparameters=None,
               initial_trials: int = INITIAL_TRIALS,
               top_fraction: float = 0.3, proposals: int = 64,
               steps: int = 300, allow_new_entries: bool = True,
               tune_new_entries: bool = True, max_retries_per_trial: int = 0,
               max_consecutive_failed_trials: int = 3):
    super().__init__(
        objective=objective, max_trials=max_trials,
        hyperparameters=hyperparameters, allow_new_entries=allow_new_entries,
        tune_new_entries=tune_new_entries, seed=seed,
        max_retries_per_trial=max_retries_per_trial,
        max_consecutive_failed_trials=max_consecutive_failed_trials)
    if initial_trials < 1 or not 0 < top_fraction < 1:
      raise ValueError("initial_trials must be >= 1 and top_fraction in "
                       "(0, 1).")
    self.initial_trials, self.top_fraction = initial_trials, top_fraction
    self.proposals, self.steps = proposals, steps
    # trial id -> "random" (warm-up or every proposal tried) or "gan".
    self.proposed_by: Dict[str, str] = {}

  def populate_space(self, trial_id: str) -> Dict[str, object]:
    """The GAN's best-scored untried configuration once `initial_trials`
    trials have finished, else (or if it has none) a random one."""
    finished = self.finished_trials()
    values, source = None, "random"
    if len(finished) >= self.initial_trials:
      values, source = self._gan_values(finished), "gan"
    if values is None:
      values, source = self._random_values(), "random"
    if values is None:
      return {"status": TrialStatus.STOPPED, "values": None}
    self.proposed_by[trial_id] = source
    return {"status": TrialStatus.RUNNING, "values": values}

  def finished_trials(self) -> List[Trial]:
    """The completed trials, in the order they ended."""
    return [self.trials[i] for i in self.end_order
            if self.trials[i].status == TrialStatus.COMPLETED]

  def split(self, finished: Sequence[Trial],
            encoding: Encoding) -> Tuple[np.ndarray, np.ndarray]:
    """The encodings of the best `top_fraction` of `finished` (good) and
    of the others; ties keep the order the trials ended in."""
    sign = -1.0 if self.objective.direction == "max" else 1.0
    ranked = sorted(finished, key=lambda trial: sign * trial.score)
    good = max(1, math.ceil(self.top_fraction * len(ranked)))
    vectors = np.stack([encoding.encode(t.hyperparameters.values)
                        for t in ranked])
    return vectors[:good], vectors[good:]

  def _gan_values(self, finished) -> Optional[Dict[str, object]]:
    encoding = Encoding(self.hyperparameters)
    if not encoding.dim:
      return None
    gan = networks(encoding.layout, self.steps)
    rng = np.random.default_rng([self.seed % 2**32, len(self.trials)])
    gan.fit(*self.split(finished, encoding), rng)
    untried = {}
    generated = gan.sample(self.proposals, rng)
    rates = np.resize(np.asarray(MUTATION_RATES), self.proposals)
    for vector in encoding.mutate(generated, rates, rng):
      values = encoding.decode(vector)
      if not self._duplicate(values):
        untried.setdefault(self._compute_values_hash(values), values)
    if not untried:
      return None
    candidates = list(untried.values())
    scores = gan.score(np.stack([encoding.encode(v) for v in candidates]))
    return candidates[int(np.argmax(scores))]

  def get_state(self) -> Dict[str, object]:
    state = super().get_state()
    state.update(initial_trials=self.initial_trials,
                 top_fraction=self.top_fraction, proposals=self.proposals,
                 steps=self.steps, proposed_by=self.proposed_by)
    return state

  def set_state(self, state: Dict[str, object]) -> None:
    super().set_state(state)
    self.initial_trials = state["initial_trials"]
    self.top_fraction = state["top_fraction"]
    self.proposals, self.steps = state["proposals"], state["steps"]
    self.proposed_by = dict(state["proposed_by"])


class GANSearch(kt.Tuner):
  """A KerasTuner tuner searching with the `GANOracle`, as
  `kt.RandomSearch` searches with its oracle; the arguments are the
  oracle's, `hypermodel` and the `kt.Tuner` keywords (directory,
  project_name, overwrite, ...)."""

  def __init__(self, hypermodel=None, objective=None, max_trials: int = 10,
               seed: Optional[int] = None,
               initial_trials: int = INITIAL_TRIALS, top_fraction: float = 0.3,
               proposals: int = 64, steps: int = 300, hyperparameters=None,
               **kwargs):
    oracle = GANOracle(objective=objective, max_trials=max_trials, seed=seed,
                       hyperparameters=hyperparameters,
                       initial_trials=initial_trials,
                       top_fraction=top_fraction, proposals=proposals,
                       steps=steps)
    super().__init__(oracle, hypermodel, **kwargs)
