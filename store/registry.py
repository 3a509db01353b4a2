"""A name -> object registry that refuses duplicate names.

Used by `extract/` (extractors), `heads/` (heads) and `pipelines/` (datasets, features).
It lives in `store/`, the bottom layer, only because every other package may import it;
it knows nothing about HDF5 or models.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes, factories). `register` raises on a duplicate name."""

    def __init__(self, kind: str):
        self.kind = kind  # what the entries are, used in error messages ("head", "dataset")
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@HEADS.register("casc")`."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> T:
        """Remove and return the entry `name` (e.g. a test-only entry, after its test)."""
        self.get(name)  # an unknown name lists the known ones
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
