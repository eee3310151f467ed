"""Item side features (`remi prepare --item-features ITEMS.csv[:COL]`): written next to the prepared data
in items.tsv order with raw values, the category each evaluation sees, and clear errors for bad files."""

import json
import os

import pytest

from remi import cli
from remi_tf import feature_tables, item_index, models
from remi_tf import input as input_lib
from remi_tf.pipelines import feature_csvs
from tests.pipelines.test_local import write_log


def write_csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def prepared(tmp_path):
    """Items a..f (each in 5 users' sequences); `z` is in the CSV but not in the log."""
    write_log(tmp_path / "log.csv", [(f"u{u}", item, 10 * i) for u in range(5) for i, item in enumerate("abcdef")])
    features = write_csv(tmp_path / "items.csv", "item_id,title,categories\n"
                                                 "a,Alpha,x|y\nb,Beta,y\nc,Gamma,\nd,Delta,x\nz,Zeta,w\n")
    output = str(tmp_path / "data")
    assert cli.main(["prepare", "--input", str(tmp_path / "log.csv"), "--output", output,
                     "--item-features", f"{features}:categories"]) == 0
    return output


def test_prepare_writes_the_features_of_the_log_items_in_items_tsv_order(prepared):
    vocabulary = input_lib.read_vocabulary(prepared)
    expected = {"a": "x|y", "b": "y", "c": "", "d": "x", "e": "", "f": ""}  # c empty, e and f not listed
    with open(os.path.join(prepared, feature_tables.ITEM_FEATURES_FILE)) as stream:
        lines = stream.read().splitlines()
    assert lines == ["item_id\tcategories"] + [f"{item}\t{expected[item]}" for item in vocabulary]
    manifest = json.load(open(os.path.join(prepared, "manifest.json")))
    assert manifest["item_features"]["columns"] == ["categories"]
    assert (manifest["item_features"]["items_with_features"], manifest["item_features"]["rows_not_in_log"]) == (4, 1)
    # Diversity's category: the first value; items without one share the unknown category 0 with padding.
    categories = feature_tables.read_categories(prepared, vocabulary, item_index.FIRST_ITEM_INDEX)
    by_item = dict(zip(vocabulary, categories[item_index.FIRST_ITEM_INDEX:]))
    assert by_item["a"] == by_item["d"] != by_item["b"] and by_item["b"] > 0
    assert by_item["c"] == by_item["e"] == by_item["f"] == categories[0] == 0


def test_spec_names_columns_or_takes_all():
    assert feature_csvs.parse_spec("items.csv:categories,brand") == ("items.csv", ["categories", "brand"])
    assert feature_csvs.parse_spec("items.csv") == ("items.csv", None)
    assert feature_csvs.parse_spec("gs://bucket/items.csv") == ("gs://bucket/items.csv", None)


@pytest.mark.parametrize("text, message", [
    ("id,categories\na,x\n", "line 1: the first column must be 'item_id'"),
    ("item_id,categories\na,x\nb\n", "line 3: 1 fields, expected 2"),
    ("item_id,categories\na,x\na,y\n", "line 3: item_id 'a' repeats an earlier line"),
    ("item_id,categories\nq,x\nr,y\n", "none of its 2 item_ids is one of the log's"),
    ("item_id,genre\na,x\n", "line 1: no column ['categories']"),
])
def test_bad_feature_files_are_named_with_line_and_field(tmp_path, text, message):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match="bad.csv") as error:
        feature_csvs.write_feature_table(feature_csvs.read_feature_csv(f"{path}:categories"), str(tmp_path),
                                           ["a", "b"])
    assert message in str(error.value)
    assert not os.path.exists(tmp_path / feature_tables.ITEM_FEATURES_FILE)


def test_recbole_atomic_files_are_read_by_column_name_with_sequences_as_lists(tmp_path):
    """RecBole's ml-100k.item / ml-100k.user layout: tab-separated, `name:type` header; a token_seq field
    (space-separated) is multi-valued."""
    items = write_csv(tmp_path / "ml.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                            "1\tToy Story\t1995\tAnimation Children's Comedy\n"
                                            "2\tGoldenEye\t1995\tAction\n3\tUnknown\t\t\n")
    features = feature_csvs.read_feature_csv(f"{items}:class,release_year")
    assert features.columns == ["class", "release_year"]
    assert features.values == {"1": ["Animation|Children's|Comedy", "1995"], "2": ["Action", "1995"], "3": ["", ""]}
    users = write_csv(tmp_path / "ml.user", "user_id:token\tage:token\tgender:token\n1\t24\tM\n2\t53\n")
    with pytest.raises(ValueError, match=r"ml.user: line 3: 2 fields, expected 3 \(user_id, age, gender\)"):
        feature_csvs.read_feature_csv(users, key="user_id")
