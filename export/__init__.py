"""Export of trained REMI models (SavedModel, ScaNN index, TF Serving layout), server and client."""
