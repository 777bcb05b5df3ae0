"""PackedNames reads back exactly the names it was given, and bisect works on it as on a list."""

from __future__ import annotations

import bisect

import hypothesis
from hypothesis import strategies as st

from provenafs.cache.packed_names import PackedNames

NAMES = st.lists(st.text(st.characters(exclude_categories=()), max_size=12), max_size=60)


@hypothesis.given(names=NAMES, probe=st.text(max_size=12))
def test_packed_names_read_back_as_the_list_they_came_from(names: list[str], probe: str) -> None:
    names.sort()
    packed = PackedNames(names)
    assert len(packed) == len(names)
    assert list(packed) == names
    assert [packed[i] for i in range(-len(names), len(names))] == names + names
    assert list(packed[1:-1]) == names[1:-1]
    assert bisect.bisect_left(packed, probe) == bisect.bisect_left(names, probe)
    assert packed == PackedNames(names)
    assert (packed == PackedNames([*names, "z"])) is False


def test_an_index_past_the_end_is_an_index_error() -> None:
    packed = PackedNames(["a", "b"])
    try:
        packed[2]
    except IndexError:
        pass
    else:
        raise AssertionError("packed[2] of two names")
    assert list(PackedNames()) == []
