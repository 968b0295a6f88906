"""Ordered collections of objects with cursor pagination in O(log N + page)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .params import RangeFilter

Key = tuple[int, str]
Indexer = Callable[[dict[str, Any]], str | None]


@dataclass(slots=True)
class Record:
    """One stored object; `wire` caches its serialised JSON until the object changes."""

    id: str
    created: int
    data: dict[str, Any]
    wire: bytes | None = None


@dataclass(frozen=True, slots=True)
class PageQuery:
    """What a list request asks for, with cursors already resolved to records."""

    limit: int
    created: RangeFilter | None = None
    starting_after: Record | None = None
    ending_before: Record | None = None
    index: tuple[str, str] | None = None
    predicate: Callable[[Record], bool] | None = None


class Collection:
    """Objects kept sorted by (created, id) ascending; lists walk it backwards (newest first).

    Secondary indexes map an immutable field (customer, subscription) to its own sorted key
    list, so filtering on it does not scan every object.
    """

    def __init__(self, url: str, indexes: Mapping[str, Indexer] | None = None) -> None:
        self.url = url
        self._by_id: dict[str, Record] = {}
        self._keys: list[Key] = []
        self._indexers = dict(indexes or {})
        self._index: dict[str, dict[str, list[Key]]] = {name: {} for name in self._indexers}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, obj_id: object) -> bool:
        return obj_id in self._by_id

    def __iter__(self) -> Iterator[Record]:
        """Records oldest first."""
        by_id = self._by_id
        return (by_id[k[1]] for k in list(self._keys))

    def newest(self, count: int) -> list[Record]:
        """The `count` most recently created records, oldest of them first."""
        if count <= 0:
            return []
        return [self._by_id[k[1]] for k in self._keys[-count:]]

    def get(self, obj_id: str) -> Record | None:
        """The record with this id, or None."""
        return self._by_id.get(obj_id)

    def add(self, record: Record) -> Record:
        """Insert one record (usually at the end, since the clock only moves forward)."""
        key = (record.created, record.id)
        self._by_id[record.id] = record
        _insert(self._keys, key)
        for name, indexer in self._indexers.items():
            value = indexer(record.data)
            if value is not None:
                _insert(self._index[name].setdefault(value, []), key)
        return record

    def bulk_add(self, records: Iterable[Record]) -> None:
        """Insert many records with one sort per list instead of one insert each."""
        new = list(records)
        for record in new:
            self._by_id[record.id] = record
        self._keys.extend((r.created, r.id) for r in new)
        self._keys.sort()
        for name, indexer in self._indexers.items():
            index = self._index[name]
            touched: set[str] = set()
            for record in new:
                value = indexer(record.data)
                if value is not None:
                    index.setdefault(value, []).append((record.created, record.id))
                    touched.add(value)
            for value in touched:
                index[value].sort()

    def replace(self, record: Record, data: dict[str, Any]) -> dict[str, Any]:
        """Swap in a new version of the object (copy-on-write) and return the old one."""
        old = record.data
        record.data = data
        record.wire = None
        return old

    def prune_before(self, cutoff: int) -> int:
        """Drop records created before `cutoff` (event retention); returns how many."""
        count = bisect.bisect_left(self._keys, (cutoff, ""))
        for _, obj_id in self._keys[:count]:
            record = self._by_id.pop(obj_id)
            for name, indexer in self._indexers.items():
                value = indexer(record.data)
                if value is not None:
                    self._index[name][value].remove((record.created, record.id))
        del self._keys[:count]
        return count

    def page(self, query: PageQuery) -> tuple[list[Record], bool]:
        """One page newest first, and whether more objects lie beyond it."""
        if query.index is not None:
            base = self._index.get(query.index[0], {}).get(query.index[1], [])
        else:
            base = self._keys
        lo, hi = 0, len(base)
        if query.created is not None:
            if query.created.gte is not None:
                lo = bisect.bisect_left(base, (query.created.gte, ""))
            if query.created.lt is not None:
                hi = bisect.bisect_left(base, (query.created.lt, ""))
        if query.ending_before is not None:
            cursor = (query.ending_before.created, query.ending_before.id)
            lo = max(lo, bisect.bisect_right(base, cursor))
            return self._walk_up(base, lo, hi, query)
        if query.starting_after is not None:
            cursor = (query.starting_after.created, query.starting_after.id)
            hi = min(hi, bisect.bisect_left(base, cursor))
        return self._walk_down(base, lo, hi, query)

    def _walk_down(
        self, base: list[Key], lo: int, hi: int, query: PageQuery
    ) -> tuple[list[Record], bool]:
        by_id, pred, want = self._by_id, query.predicate, query.limit + 1
        if pred is None:
            # No per-object filter: the page is a plain slice of the sorted keys.
            start = max(lo, hi - want)
            found = [by_id[k[1]] for k in reversed(base[start:hi])]
        else:
            found = []
            i = hi - 1
            while i >= lo and len(found) < want:
                record = by_id[base[i][1]]
                if pred(record):
                    found.append(record)
                i -= 1
        return found[: query.limit], len(found) > query.limit

    def _walk_up(
        self, base: list[Key], lo: int, hi: int, query: PageQuery
    ) -> tuple[list[Record], bool]:
        by_id, pred, want = self._by_id, query.predicate, query.limit + 1
        if pred is None:
            found = [by_id[k[1]] for k in base[lo : min(hi, lo + want)]]
        else:
            found = []
            i = lo
            while i < hi and len(found) < want:
                record = by_id[base[i][1]]
                if pred(record):
                    found.append(record)
                i += 1
        page = found[: query.limit]
        page.reverse()
        return page, len(found) > query.limit


def _insert(keys: list[Key], key: Key) -> None:
    if not keys or keys[-1] < key:
        keys.append(key)
    else:
        bisect.insort(keys, key)
