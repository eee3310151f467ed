"""The two model configs of an export directory: models.config for stock TF Serving (no ScaNN model) and
models.scann.config (every model, what remi serve follows), across exports into one directory."""

import os

from remi_tf.export import exporter, serving_layout


def configs(directory):
    return (serving_layout.configured_models(directory, serving_layout.MODELS_CONFIG),
            serving_layout.configured_models(directory, serving_layout.SCANN_MODELS_CONFIG))


def test_the_scann_model_is_only_in_the_scann_config_and_earlier_exports_stay(tmp_path):
    out = str(tmp_path)
    exporter.write_model_configs(out, exporter.model_names("cds", "both"), "/models")
    assert configs(out) == (["cds-query", "cds-exact"], ["cds", "cds-query", "cds-exact"])
    assert serving_layout.served_config_path(out) == os.path.join(out, "models.scann.config")
    exporter.write_model_configs(out, exporter.model_names("beauty", "brute-force"), "/models")  # <name> exact
    assert configs(out) == (["cds-query", "cds-exact", "beauty", "beauty-query"],
                            ["cds", "cds-query", "cds-exact", "beauty", "beauty-query"])


def test_a_brute_force_export_writes_models_config_only_and_an_old_scann_entry_is_dropped(tmp_path):
    out = str(tmp_path)
    exporter.write_model_configs(out, exporter.model_names("remi", "brute-force"), "/models")
    assert configs(out) == (["remi", "remi-query"], None)
    assert serving_layout.served_config_path(out) == os.path.join(out, "models.config")
    # an export directory of an older remi-tf: its models.config lists the ScaNN model
    serving_layout.write_models_config(out, ["old", "old-query"], "/models")
    exporter.write_model_configs(out, {"old": "scann", "old-query": "query"}, "/models")
    assert configs(out) == (["old-query"], ["old", "old-query"])
