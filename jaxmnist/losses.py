"""Sparse categorical cross-entropy with Keras semantics, its stable logits form, and accuracy."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Keras's backend.epsilon(): probabilities are clipped to [EPSILON, 1 - EPSILON] before the log.
EPSILON = 1e-7


def sparse_categorical_crossentropy(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample -log p[label] on probabilities, as keras.losses.sparse_categorical_crossentropy.

    Keras renormalises the rows, then clips to [1e-7, 1 - 1e-7]: a saturated softmax gives a loss
    of at most -log(1e-7) = 16.12 rather than inf, which is what the chapter's naive run printed.
    """
    probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
    probs = jnp.clip(probs, EPSILON, 1.0 - EPSILON)
    return -jnp.log(jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0])


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample cross-entropy from logits via log-softmax: the same loss, without underflow."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def smoothed(per_class_loss: jax.Array, labels: jax.Array, smoothing: float) -> jax.Array:
    """Per-sample loss against targets (1 - s) on the label plus s / K on each of the K classes,
    from each class's -log p [B, K]: Keras's `label_smoothing`."""
    on_label = jnp.take_along_axis(per_class_loss, labels[:, None].astype(jnp.int32), axis=-1)
    return (1.0 - smoothing) * on_label[:, 0] + smoothing * jnp.mean(per_class_loss, axis=-1)


def per_sample_loss(
    logits: jax.Array, labels: jax.Array, kind: str = "logits", label_smoothing: float = 0.0
) -> jax.Array:
    """The training loss of each sample, from the model's logits.

    "probs": Keras's clipped loss on the softmax (the chapter's); "logits": its stable form.
    With `label_smoothing` s, the targets are (1 - s) one-hot + s / 10 (see `smoothed`).
    """
    if not label_smoothing:
        if kind == "probs":
            return sparse_categorical_crossentropy(jax.nn.softmax(logits), labels)
        return softmax_cross_entropy(logits, labels)
    if kind == "probs":
        probs = jax.nn.softmax(logits)
        probs = jnp.clip(probs / jnp.sum(probs, -1, keepdims=True), EPSILON, 1.0 - EPSILON)
        per_class = -jnp.log(probs)
    else:
        per_class = -jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return smoothed(per_class, labels, label_smoothing)


def correct(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample 1.0 where argmax(scores) == label (scores may be logits or probabilities)."""
    return (jnp.argmax(scores, axis=-1) == labels).astype(jnp.float32)


def accuracy(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean of `correct`: the chapter's `(argmax(predictions) == labels).mean()`."""
    return jnp.mean(correct(scores, labels))
