"""Batch normalisation whose training step uses TensorFlow's fused kernel.

Keras 3's ``BatchNormalization`` computes batch moments and the normalisation as separate
ops (``Mean``, ``SquaredDifference``, ``Mul``, ``Sum``...); on TensorFlow's CPU backend
that was about 30 % of a profiled StrongPose train step. :class:`BatchNormalization` here runs the
training-mode call of a 4-D channels-last input through one ``FusedBatchNormV3`` op and
updates ``moving_mean`` / ``moving_variance`` exactly as Keras does (momentum, *biased*
batch variance). Everything else (JAX, inference, ``trainable=False``, masks, renorm,
``synchronized=True``, other ranks or axes) is the parent's call, and the variables are
the parent's, in the same order, so checkpoints and weight files are unchanged.

The class keeps the name ``BatchNormalization`` on purpose: Keras 3 names a layer's group in
a ``.weights.h5`` file by its snake-cased class name (``batch_normalization_3/vars/0``), so
another name would stop Keras' ImageNet files and every saved StrongPose weights file from
loading. It is registered as ``strongpose>BatchNormalization``.

    from strongpose import batch_norm
    bn = batch_norm.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")
"""

from __future__ import annotations

import keras
from keras import backend

PACKAGE = "strongpose"
FUSED_MIN_EPSILON = 1.001e-5        # cuDNN's floor (TF's fused_batch_norm wrapper clamps to it)
FUSED_INPUT_DTYPES = ("float16", "float32")   # fed to the kernel as is; others upcast to float32
NHWC_CHANNEL_AXES = (-1, 3)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused training-mode kernel on TensorFlow.

    Same arguments, variables, config and results (within float rounding) as the parent.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        return self._fused_training_call(inputs)

    def _can_fuse(self, inputs, training, mask) -> bool:
        """Whether this call is a plain training step the fused kernel computes exactly."""
        return (bool(training) and self.trainable and mask is None
                and backend.backend() == "tensorflow"
                and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in NHWC_CHANNEL_AXES
                and self.epsilon >= FUSED_MIN_EPSILON)

    def _fused_training_call(self, inputs):
        """Normalise over the batch with ``FusedBatchNormV3`` and update the moving statistics."""
        import tensorflow as tf

        x = inputs
        if backend.standardize_dtype(x.dtype) not in FUSED_INPUT_DTYPES:
            x = tf.cast(x, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        empty = tf.zeros([0], tf.float32)
        result = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        self._update_moving_statistics(result.batch_mean,
                                       _biased_variance(result.batch_variance, x))
        return tf.cast(result.y, self.compute_dtype)

    def _update_moving_statistics(self, mean, variance) -> None:
        """The parent's update: ``moving = moving * momentum + batch * (1 - momentum)``."""
        self.moving_mean.assign(
            self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))


def _biased_variance(unbiased, x):
    """The kernel's batch variance divides by ``n - 1``; Keras keeps the one over ``n``."""
    import tensorflow as tf

    n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
    return unbiased * ((n - 1.0) / n)
