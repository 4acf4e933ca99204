"""The GAN-guided oracle over the graph search space, on a cheap objective
(no model is trained): its proposals lie inside the space and are never
repeated, the same seed makes the same search, a tuner reloaded from its
project folder goes on as the uninterrupted one, and its GAN learns which
encodings are good."""
import keras_tuner as kt
import numpy as np
import pytest

from tfgan_rec import config as config_lib
from tfgan_rec import gan_oracle, tuning


def graph_space() -> kt.HyperParameters:
  space = kt.HyperParameters()
  tuning.define_graph(space, config_lib.RunConfig())
  return space


def toy_score(values) -> float:
  """Higher with more layers, row normalisation and dropout near 0.2."""
  return (values["graph_layers"] / 4 +
          0.5 * (values["graph_normalization"] == "row") -
          abs(values["graph_edge_dropout"] - 0.2) +
          0.1 * values["pooled_history"] + values["embedding_dim"] / 1000)


class ToyTuner(gan_oracle.GANSearch):

  def run_trial(self, trial, *args, **kwargs):
    return {"score": toy_score(trial.hyperparameters.values)}


def search(directory, seed: int, trials: int) -> ToyTuner:
  # 100 GAN steps instead of 300 keep the test cheap; the logic is the same.
  tuner = ToyTuner(objective=kt.Objective("score", "max"),
                   max_trials=trials, seed=seed, initial_trials=3, steps=100,
                   proposals=32, directory=str(directory), project_name="p")
  tuner.oracle.update_space(graph_space())
  tuner.search(verbose=0)
  return tuner


def proposed(tuner):
  oracle = tuner.oracle
  return [oracle.trials[i].hyperparameters.values for i in oracle.start_order]


def inside(values, space: kt.HyperParameters) -> bool:
  for hp in space.space:
    value = values[hp.name]
    if isinstance(hp, (kt.engine.hyperparameters.Choice,)):
      ok = value in hp.values
    elif isinstance(hp, kt.engine.hyperparameters.Boolean):
      ok = isinstance(value, bool)
    else:
      steps = (value - hp.min_value) / (hp.step or 1)
      ok = (hp.min_value <= value <= hp.max_value and
            abs(steps - round(steps)) < 1e-6)
    if not ok:
      return False
  return set(values) == {hp.name for hp in space.space}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted search of 7 trials, seed 1."""
  return proposed(search(tmp_path_factory.mktemp("reference"), 1, 7))


def test_encoding_round_trips_and_decodes_inside_the_space():
  space = graph_space()
  encoding = gan_oracle.Encoding(space)
  # layers 1 + combination 2 + normalisation 2 + dropout 1 + dim 3 + bool 2
  assert encoding.dim == 11
  values = {"graph_layers": 3, "graph_combination": "learned",
            "graph_normalization": "row", "graph_edge_dropout": 0.4,
            "embedding_dim": 128, "pooled_history": False}
  decoded = encoding.decode(encoding.encode(values))
  assert decoded["graph_edge_dropout"] == pytest.approx(0.4)
  assert {**decoded, "graph_edge_dropout": 0.4} == values
  for vector in np.random.default_rng(0).normal(0.5, 1.0, (50, 11)):
    assert inside(encoding.decode(vector), space)


def test_proposals_are_inside_the_space_and_new_and_the_gan_proposes(
    reference, tmp_path):
  space = graph_space()
  assert all(inside(values, space) for values in reference)
  assert len({tuple(sorted(v.items())) for v in reference}) == len(reference)
  tuner = search(tmp_path, 1, 7)
  sources = [tuner.oracle.proposed_by[i] for i in tuner.oracle.start_order]
  # 3 warm-up trials, then the GAN's best-scored untried proposals.
  assert sources == ["random"] * 3 + ["gan"] * 4
  # The same seed makes the same search; another seed another.
  assert proposed(tuner) == reference
  assert proposed(search(tmp_path / "other", 2, 4)) != reference[:4]


def test_a_reloaded_tuner_goes_on_as_the_uninterrupted_one(reference,
                                                           tmp_path):
  first = search(tmp_path, 1, 5)
  assert proposed(first) == reference[:5]
  resumed = search(tmp_path, 1, 7)  # reloads oracle.json and the trials
  assert resumed.oracle.initial_trials == 3
  assert len(resumed.oracle.proposed_by) == 7
  assert proposed(resumed) == reference


def test_the_gan_learns_which_encodings_are_good():
  # One choice of 2 and one number: good trials chose the first and a
  # high number, the rest the second and a low one.
  gan = gan_oracle.ProposalGAN(((2, True), (1, False)), steps=300)
  good = np.array([[1, 0, 0.9]] * 3, np.float32)
  rest = np.array([[0, 1, 0.1]] * 3, np.float32)
  gan.fit(good, rest, np.random.default_rng(0))
  samples = gan.sample(200, np.random.default_rng(1))
  assert set(np.unique(samples[:, :2])) == {0.0, 1.0}
  assert samples[:, 0].mean() > 0.8
  assert samples[:, 2].mean() > 0.6
  # The generator makes the good encodings, which the discriminator is also
  # taught to call fake, so their score settles near 1/2 (the GAN's
  # equilibrium); the rest's goes to 0.
  scores = gan.score(np.concatenate([good[:1], rest[:1]]))
  assert scores[0] > 0.4 and scores[1] < 0.05
