"""The GAN objective in one place: `gan_loss` and the terms it is built from.

As in TF-GAN (`losses/losses_impl.py`), each loss is a pure function named as
in the papers, returning per-example values [batch]; the trainers average
them over the global batch, so that distributed replicas add up to the
one-device loss. `gan_loss` combines the adversarial pair chosen by name with
each player's extra terms and returns a `GANLoss`, the shape of TF-GAN's
namedtuple; both generators (interactions and new items) call it.

>>> loss = gan_loss(tf.constant([2.0]), tf.constant([-1.0]))
>>> [round(float(x[0]), 4) for x in loss]
[1.3133, 0.4402]
"""
from typing import NamedTuple

import tensorflow as tf


class GANLoss(NamedTuple):
  """Per-example losses of the two players."""
  generator_loss: tf.Tensor
  discriminator_loss: tf.Tensor


def minimax_discriminator_loss(real_logits: tf.Tensor,
                               fake_logits: tf.Tensor) -> tf.Tensor:
  """-log D(real) - log(1 - D(fake)) (Goodfellow et al. 2014), per example."""
  return tf.nn.softplus(-real_logits) + tf.nn.softplus(fake_logits)


def modified_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
  """The non-saturating generator loss -log D(fake) (Goodfellow et al. 2014,
  TF-GAN's `modified_generator_loss`), per example."""
  return tf.nn.softplus(-fake_logits)


def wasserstein_discriminator_loss(real_logits: tf.Tensor,
                                   fake_logits: tf.Tensor) -> tf.Tensor:
  """The critic's loss D(fake) - D(real) (Arjovsky et al. 2017)."""
  return fake_logits - real_logits


def wasserstein_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
  """-D(fake) (Arjovsky et al. 2017)."""
  return -fake_logits


def wasserstein_gradient_penalty(critic, real: tf.Tensor, fake: tf.Tensor,
                                 condition, mix: tf.Tensor) -> tf.Tensor:
  """WGAN-GP (Gulrajani et al. 2017): (||grad critic(x_hat)|| - 1)^2 at
  x_hat between real and fake, per example; `mix` [batch, 1] are the
  interpolation weights."""
  interpolated = mix * real + (1.0 - mix) * fake
  with tf.GradientTape() as tape:
    tape.watch(interpolated)
    logits = critic(interpolated, condition, training=True)
  grads = tape.gradient(logits, interpolated)
  norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=-1) + 1e-12)
  return tf.square(norm - 1.0)


def zero_reconstruction(generated: tf.Tensor,
                        negatives: tf.Tensor) -> tf.Tensor:
  """CFGAN's ZR penalty (Chae et al. 2018): mean squared score on sampled
  non-interacted items, pulling generated preferences for them toward 0."""
  weights = tf.cast(negatives, generated.dtype)
  return tf.reduce_sum(tf.square(generated) * weights, axis=-1) / tf.maximum(
      tf.reduce_sum(weights, axis=-1), 1.0)


def masked_reconstruction(generated: tf.Tensor, real: tf.Tensor,
                          shown: tf.Tensor) -> tf.Tensor:
  """Binary cross-entropy of generated scores against the real vector on the
  shown positions (the user's items and the sampled negatives), per example.

  Items dropped from the condition are among the positives, so this teaches
  the generator to complete a partial history, not to copy it.
  """
  eps = 1e-6
  bce = -(real * tf.math.log(generated + eps) +
          (1.0 - real) * tf.math.log(1.0 - generated + eps))
  return tf.reduce_sum(bce * shown, axis=-1) / tf.maximum(
      tf.reduce_sum(shown, axis=-1), 1.0)


def softmax_ranking(logits: tf.Tensor, real: tf.Tensor,
                    catalogue: tf.Tensor) -> tf.Tensor:
  """Softmax cross-entropy of the real items among the `catalogue` items:
  the next-item objective of sequential recommenders (GRU4Rec, SASRec), per
  example, averaged over its real items.

  Args:
    logits: the generator's logits, [batch, items].
    real: 1 for the items to rank first, [batch, items].
    catalogue: 1 for the items competing (the condition's items are left
      out: they are never recommended), [batch, items]; real items outside
      it are not counted.

  Returns:
    The loss per example, [batch].
  """
  logits += (catalogue - 1.0) * 1e9
  real = real * catalogue
  log_probability = tf.nn.log_softmax(logits, axis=-1)
  return -tf.reduce_sum(log_probability * real, axis=-1) / tf.maximum(
      tf.reduce_sum(real, axis=-1), 1.0)


def cosine_anchor(generated: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
  """1 - cosine similarity of unit-norm embeddings, per example: ties each
  generated embedding to the real one it stands in for."""
  return 1.0 - tf.reduce_sum(generated * target, axis=-1)


LOSSES = {
    "modified": (minimax_discriminator_loss, modified_generator_loss),
    "wasserstein": (wasserstein_discriminator_loss, wasserstein_generator_loss),
}


def gan_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor,
             kind: str = "modified", generator_terms=0.0,
             discriminator_terms=0.0,
             adversarial_weight: float = 1.0) -> GANLoss:
  """Both players' per-example losses.

  Args:
    real_logits: D's logits for real examples [batch].
    fake_logits: D's logits for generated examples [batch].
    kind: the adversarial pair, `modified` (minimax D, non-saturating G) or
      `wasserstein`.
    generator_terms: per-example terms added to G's loss (reconstruction,
      zero reconstruction, anchoring), already weighted.
    discriminator_terms: per-example terms added to D's loss (the gradient
      penalty), already weighted.
    adversarial_weight: the weight of G's adversarial term (D's loss is not
      weighted).

  Returns:
    `GANLoss(generator_loss, discriminator_loss)`, each [batch].
  """
  if kind not in LOSSES:
    raise ValueError(f"unknown GAN loss '{kind}'; use "
                     f"{' or '.join(LOSSES)}.")
  discriminator_fn, generator_fn = LOSSES[kind]
  return GANLoss(adversarial_weight * generator_fn(fake_logits) +
                 generator_terms,
                 discriminator_fn(real_logits, fake_logits) +
                 discriminator_terms)
