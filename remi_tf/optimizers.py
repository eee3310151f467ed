"""LazyAdam: Adam whose sparse (embedding) updates touch only the rows seen in the batch."""

from __future__ import annotations

import tensorflow as tf

from remi_tf import collectives


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class LazyAdam(tf.keras.optimizers.Adam):
    """Adam with lazy sparse updates, as TF Addons' LazyAdam (no longer maintained) and tf.compat.v1's.

    For an IndexedSlices gradient (an embedding table), only the rows in the batch have their moments
    decayed and their values updated; stock Adam decays and rewrites the whole table every step, which
    dominates the step time of a large item table on CPU. Dense variables get stock Adam. The sparse
    gradient reaching `update_step` has unique indices (the base optimizer de-duplicates it).
    """

    def add_variable_from_reference(self, model_variable: tf.Variable, variable_name: str, shape=None,
                                    initial_value=None) -> tf.Variable:
        """Slots start as zeros made where the slot lives. Stock Keras computes them on the default device
        first: for an item table sharded across parameter servers, every shard's slots would pass
        through the chief's memory whole (7.7 GB for a 10 M x 64 table)."""
        if initial_value is None:
            slot_shape = model_variable.shape if shape is None else shape
            dtype = getattr(model_variable, "true_dtype", model_variable.dtype)
            initial_value = lambda: tf.zeros(slot_shape, dtype)  # noqa: E731 (called under the slot's device)
        return super().add_variable_from_reference(model_variable, variable_name, shape, initial_value)

    def update_step(self, gradient: tf.Tensor | tf.IndexedSlices, variable: tf.Variable) -> None:
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            super().update_step(gradient, variable)
            return
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, local_step)) / (
            1 - tf.pow(beta_1, local_step))
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        indices = gradient.indices
        m_rows = beta_1 * tf.gather(collectives.replica_local(m), indices) + (1 - beta_1) * gradient.values
        v_rows = beta_2 * tf.gather(collectives.replica_local(v), indices) + (1 - beta_2) * tf.square(gradient.values)
        m.scatter_update(tf.IndexedSlices(m_rows, indices))
        v.scatter_update(tf.IndexedSlices(v_rows, indices))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), indices))
