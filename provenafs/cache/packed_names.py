"""``PackedNames``: a sequence of strings held as one text and an array of offsets.

A listing of 1,000,000 names as a ``list[str]`` costs about 60 bytes a name in object headers
and pointers beside the characters; packed, a name costs its characters and 4 bytes. Indexing
builds the ``str`` (a slice) on demand, so ``bisect`` over sorted names works as on a list.
Two ``PackedNames`` are equal when they hold the same names in the same order.

No I/O; knows nothing of what the names are.
"""

from __future__ import annotations

import array
import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

__all__ = ["PackedNames"]


class PackedNames(Sequence[str]):
    """Immutable strings, packed; ``names[i]`` is a new ``str`` equal to the i-th name."""

    __slots__ = ("_ends", "_text")

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = list(names)
        self._text = "".join(names)
        self._ends = array.array("I", itertools.accumulate(map(len, names)))

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        ends = self._ends
        if index < 0:
            index += len(ends)
        end = ends[index]  # IndexError beyond the end, as a list's
        return self._text[ends[index - 1] if index else 0 : end]

    def __iter__(self) -> Iterator[str]:
        text, start = self._text, 0
        for end in self._ends:
            yield text[start:end]
            start = end

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackedNames):
            return NotImplemented
        return self._text == other._text and self._ends == other._ends

    __hash__ = None  # type: ignore[assignment]

    def nbytes(self) -> int:
        """The memory these names hold (their text and offsets)."""
        return sys.getsizeof(self._text) + sys.getsizeof(self._ends)

    def __repr__(self) -> str:
        return f"PackedNames({len(self)} names)"
