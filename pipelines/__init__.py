"""Data pipelines of remi-tf (installed as remi_tf.pipelines, so remi_tf, which sets TF_USE_LEGACY_KERAS,
loads first): log readers, cleaning, sequence building and the writers of the data directory (its format:
remi_tf.data_directory)."""
