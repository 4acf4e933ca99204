"""GAN losses as plain functions of discriminator logits (TF-GAN style).

Each returns per-example losses [batch]; the training loop averages them over
the global batch so that distributed replicas add up to the one-device loss.
"""
import tensorflow as tf


def minimax_discriminator_loss(real_logits: tf.Tensor,
                               fake_logits: tf.Tensor) -> tf.Tensor:
  """-log D(real) - log(1 - D(fake)), per example."""
  return (tf.nn.softplus(-real_logits) + tf.nn.softplus(fake_logits))


def minimax_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
  """Non-saturating generator loss -log D(fake), per example."""
  return tf.nn.softplus(-fake_logits)


def wasserstein_discriminator_loss(real_logits: tf.Tensor,
                                   fake_logits: tf.Tensor) -> tf.Tensor:
  return fake_logits - real_logits


def wasserstein_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
  return -fake_logits


def gradient_penalty(critic, real: tf.Tensor, fake: tf.Tensor,
                     condition, mix: tf.Tensor) -> tf.Tensor:
  """WGAN-GP: (||grad critic(x_hat)|| - 1)^2 at x_hat between real and fake,
  per example; `mix` [batch, 1] are the interpolation weights."""
  interpolated = mix * real + (1.0 - mix) * fake
  with tf.GradientTape() as tape:
    tape.watch(interpolated)
    logits = critic(interpolated, condition, training=True)
  grads = tape.gradient(logits, interpolated)
  norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=-1) + 1e-12)
  return tf.square(norm - 1.0)


def zero_reconstruction(generated: tf.Tensor, negatives: tf.Tensor) -> tf.Tensor:
  """CFGAN's ZR penalty: sum of squared scores on sampled non-interacted
  items, pulling generated preferences for negatives toward zero."""
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


LOSSES = {
    "minimax": (minimax_discriminator_loss, minimax_generator_loss),
    "wasserstein": (wasserstein_discriminator_loss, wasserstein_generator_loss),
}
