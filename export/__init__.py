"""Export of trained REMI models (installed as remi_tf.export): SavedModels, ScaNN index, TF Serving layout,
server and client."""
