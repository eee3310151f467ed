"""Config resolution: defaults -> YAML -> --set overrides, validation naming the field."""

import dataclasses
import os

import pytest
import yaml

from remi_tf import config as config_lib

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("beta: 0.5\nnum_interests: 8\nrouting: self_attentive\n")
    config = config_lib.load(path, ["beta=0", "routing_lambda=0", "logq_correction=false", "negatives=sampled"])
    assert (config.beta, config.num_interests, config.routing_lambda) == (0.0, 8, 0.0)
    assert config.logq_correction == "none" and config.negatives == "sampled"


def test_logq_correction_reads_its_old_boolean_form(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("logq_correction: true\n")  # a model directory's config.yaml from before streaming logQ
    assert config_lib.load(path).logq_correction == "counts"
    assert config_lib.load(None, ["logq_correction=streaming"]).logq_correction == "streaming"


def test_resolved_config_round_trips(tmp_path):
    config = config_lib.load(None, ["batch_size=256", "temperature=0.5"])
    config_lib.save(config, tmp_path / "config.yaml")
    assert config_lib.load(tmp_path / "config.yaml") == config


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size"), ("negatives=everything", "negatives"), ("beta=-1", "beta"),
    ("num_interests=2.5", "num_interests"), ("bogus=1", "unknown config key"), ("beta", "key=value"),
    ("logq_correction=sometimes", "logq_correction"), ("logq_alpha=0", "logq_alpha"),
    ("logq_buckets=0", "logq_buckets"), ("batch_size=true", "batch_size' expects int, got True"),
    ("learning_rate=false", "learning_rate"), ("warm_start_shrink=0", r"'warm_start_shrink' must be in \(0, 1\]"),
    ("warm_start_recent_fraction=1", r"must be in \[0, 1\)"), ("routing=capsule", "one of 'self_attentive'"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        config_lib.load(None, [override])


def test_a_retired_key_at_what_this_version_does_loads_and_otherwise_is_refused_naming_the_last_version(tmp_path):
    """A model directory of 0.1.0 lists every key; the retired ones at the values 0.2.0 behaves as load."""
    old = {**config_lib.RemiConfig().to_dict(), "interest_weights": "none", "merge": "score", "merge_lambda": 2.0,
           "logq_weight": 1.0, "routing_iterations": 3, "interest_temperature": 0.5}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert config_lib.load(tmp_path / "config.yaml") == config_lib.RemiConfig()
    for key, value in (("interest_weights", "served"), ("merge", "quota"), ("logq_weight", 0.5),
                       ("routing_iterations", 5), ("normalize_embeddings", True)):
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, key: value}))
        with pytest.raises(ValueError, match=f"config.yaml: config key '{key}' .*retired in remi-tf 0.2.0.*0.1.0"):
            config_lib.load(tmp_path / "config.yaml")
    for scoring in ("logsumexp", "mixture"):
        with pytest.raises(ValueError, match=f"interest_scoring '{scoring}' was retired.*0.1.0"):
            config_lib.load(None, [f"interest_scoring={scoring}"])


def test_every_field_declares_its_choices_or_range_and_the_reference_lists_them():
    """Each str field (but none) has choices and each number but seed a range, from the field's metadata;
    docs/configuration.md shows them."""
    for field in dataclasses.fields(config_lib.RemiConfig):
        allowed = field.metadata.get(config_lib.ALLOWED)
        if field.type in ("str", "int", "float") and field.name != "seed":
            assert allowed is not None and allowed.admits(field.default), field.name
    reference = config_lib.reference_markdown()
    assert "| `logq_alpha` | `0.01` | in (0, 1] |" in reference
    assert "| `negatives` | `'in_batch_plus_sampled'` | one of 'in_batch', 'in_batch_plus_sampled', 'sampled' |" in reference


def test_every_preset_loads():
    presets = [name for name in os.listdir(CONFIGS) if name.endswith(".yaml")]
    assert "amazon-cds.yaml" in presets
    for name in presets:
        values = yaml.safe_load(open(os.path.join(CONFIGS, name)))
        loaded = config_lib.load(os.path.join(CONFIGS, name))
        assert {key: getattr(loaded, key) for key in values} == values, name  # every key read, as written
        defaults = config_lib.RemiConfig()
        assert all(getattr(loaded, field.name) == getattr(defaults, field.name)
                   for field in dataclasses.fields(loaded) if field.name not in values), name


def test_the_configuration_reference_lists_every_key_and_is_up_to_date():
    reference = open(os.path.join(os.path.dirname(CONFIGS), "docs", "configuration.md"), encoding="utf-8").read()
    assert reference == config_lib.reference_markdown(), "docs/configuration.md is stale: python -m remi_tf.config"
    for field in dataclasses.fields(config_lib.RemiConfig):
        rows = [line for line in reference.splitlines() if line.startswith(f"| `{field.name}` |")]
        assert len(rows) == 1 and rows[0].split(" | ")[3].strip(), field.name  # one row, with a meaning


@pytest.mark.parametrize("override, message", [
    ("max_step=3000", "--set: unknown config key(s) 'max_step' (did you mean max_steps?)"),
    ("Batch_Size=3", "unknown config key(s) 'Batch_Size' (did you mean batch_size?)"),
    ("negatives=in_batc", "must be one of 'in_batch', 'in_batch_plus_sampled', 'sampled', got 'in_batc' (did you "
                          "mean in_batch?)"),
    ("routing=self_atentive", "got 'self_atentive' (did you mean self_attentive?)"),
    ("optimizer=lazyadam", "got 'lazyadam' (did you mean lazy_adam?)"),
    ("interest_scoring=hrad", "got 'hrad' (did you mean hard?)"),
])
def test_a_misspelt_key_or_value_names_the_closest(override, message):
    """Issue 40 item 6: the closest names instead of (or besides) the 40 known keys."""
    with pytest.raises(ValueError) as error:
        config_lib.load(None, [override])
    assert message in str(error.value)
    if override.startswith("max_step="):
        assert "known keys" not in str(error.value)  # the suggestion, not every key


def test_a_misspelt_yaml_key_names_the_closest_and_an_unlike_one_lists_every_key(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("num_interest: 8\n")
    with pytest.raises(ValueError, match=r"preset.yaml: unknown config key\(s\) 'num_interest' \(did you mean "
                                         r"num_interests\?\)"):
        config_lib.load(path)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) 'zzz'; known keys: \['batch_size'"):
        config_lib.load(None, ["zzz=1"])
