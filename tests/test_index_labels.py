"""LabelTable: the id -> label mapping in numpy arrays behaves as the dict it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.index.labels import LabelTable

TRICKY = ["Ana Lopez", "", "中文名", "emoji 😀", "new\nline", "bad\udcff", "Ana Lopez "]


def test_a_table_reads_like_the_dict_it_was_made_from() -> None:
    # given: unsorted ids, repeated labels, labels UTF-8 cannot encode without surrogatepass
    mapping = {7: "bob", 3: "ann", 11: "bob", 0: TRICKY[2], 5: TRICKY[5], 2: TRICKY[4]}
    # when
    table = LabelTable.from_mapping(mapping)
    # then
    assert table == mapping and dict(table) == mapping
    assert list(table) == [0, 2, 3, 5, 7, 11]  # ascending ids
    assert list(table.items()) == sorted(mapping.items())
    assert list(table.values()) == [mapping[i] for i in sorted(mapping)]
    assert len(table) == 6 and table.distinct == 5
    assert table[11] == "bob" and 11 in table and 4 not in table and "x" not in table
    assert table.label_set == frozenset(mapping.values())
    assert table.counts() == {"bob": 2, "ann": 1, TRICKY[2]: 1, TRICKY[5]: 1, TRICKY[4]: 1}
    assert table.ids_for("bob").tolist() == [7, 11] and table.ids_for("nobody").tolist() == []
    assert table.max_id() == 11 and LabelTable.empty().max_id() is None
    with pytest.raises(KeyError):
        table[4]


def test_lookup_of_many_ids_and_a_missing_one() -> None:
    table = LabelTable.from_mapping({1: "a", 5: "b", 9: "a"})
    assert table.lookup(np.array([9, 1, 5])) == ["a", "a", "b"]
    assert table.contains(np.array([0, 1, 10])).tolist() == [False, True, False]
    with pytest.raises(KeyError):
        table.lookup(np.array([1, 2]))


def test_the_arrays_cannot_be_changed() -> None:
    table = LabelTable.from_mapping({1: "a"})
    with pytest.raises(ValueError):
        table.ids[0] = 2
    with pytest.raises(TypeError):
        table[1] = "b"  # type: ignore[index]


def test_adding_and_removing_make_new_tables_and_drop_unused_labels() -> None:
    # given
    table = LabelTable.from_mapping({0: "ann", 1: "bob", 2: "ann"})
    # when
    grown = table.with_added([3, 4], ["cy", "bob"])
    shrunk = grown.without([1, 4, 99])
    # then
    assert table == {0: "ann", 1: "bob", 2: "ann"}  # unchanged
    assert grown == {0: "ann", 1: "bob", 2: "ann", 3: "cy", 4: "bob"} and grown.distinct == 3
    assert shrunk == {0: "ann", 2: "ann", 3: "cy"} and shrunk.label_set == {"ann", "cy"} and shrunk.distinct == 2
    assert table.with_added([-1], ["first"]).ids.tolist() == [-1, 0, 1, 2]
    with pytest.raises(ValueError, match="already in the table"):
        table.with_added([2], ["again"])


def test_from_arrays_sorts_checks_and_compacts() -> None:
    # given: ids out of order, a label no id uses (code 1)
    names = ["ann", "unused", "bob"]
    blob = "".join(names).encode()
    offsets = np.array([0, 3, 9, 12])
    # when
    table = LabelTable.from_arrays(np.array([5, 1]), np.array([2, 0], dtype=np.int32), offsets, blob)
    # then
    assert table == {1: "ann", 5: "bob"} and table.distinct == 2
    with pytest.raises(ValueError, match="id 1 is listed twice"):
        LabelTable.from_arrays(np.array([1, 5, 1]), np.array([0, 0, 2], dtype=np.int32), offsets, blob)
    with pytest.raises(ValueError, match="out of range"):
        LabelTable.from_arrays(np.array([1]), np.array([3], dtype=np.int32), offsets, blob)
    with pytest.raises(ValueError, match="offsets"):
        LabelTable.from_arrays(np.array([1]), np.array([0], dtype=np.int32), offsets, blob + b"x")


def test_share_names_gives_equal_tables_one_label_set() -> None:
    # given: two generations with the same labels, and one with another label
    old = LabelTable.from_mapping({0: "ann", 1: "bob"})
    same = LabelTable.from_mapping({0: "ann", 1: "bob", 2: "bob"})
    other = LabelTable.from_mapping({0: "ann", 1: "cy"})
    labels = old.label_set
    # when / then
    assert same.share_names(old) and same.label_set is labels
    assert not other.share_names(old) and other.label_set == {"ann", "cy"}


def test_a_large_table_decodes_its_labels_in_slices() -> None:
    n = 10_000
    table = LabelTable.from_pairs(range(n), (f"person {i // 3}" for i in range(n)))
    assert table.distinct == (n + 2) // 3
    assert table.names()[:2] == ("person 0", "person 1") and len(table.label_set) == table.distinct
    assert table.counts()["person 0"] == 3
