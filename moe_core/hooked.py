"""A `with` block that holds hooks on a model, shared by routing capture and steering.

Every hook is registered on entry; if one cannot be, those already registered are removed before
the error propagates, and every handle is removed when the block ends, also when its body raises.
A subclass says which hooks (`_register`) and what its own state is on entry and exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Self

from torch.utils.hooks import RemovableHandle


class HookedBlock:
    """The hook bookkeeping of a context manager that watches or changes a model's forward passes."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def _register(self) -> Iterator[RemovableHandle]:
        """Register the block's hooks, yielding each handle as soon as it exists."""
        raise NotImplementedError

    def _enter(self) -> None:
        """Set up the block's own state before its hooks can run."""

    def _exit(self) -> None:
        """Drop the block's own state once its hooks are gone."""

    def __enter__(self) -> Self:
        self._enter()
        try:
            for handle in self._register():
                self._handles.append(handle)
        except BaseException:
            self._remove_hooks()
            self._exit()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._remove_hooks()
        self._exit()

    def _remove_hooks(self) -> None:
        while self._handles:
            self._handles.pop().remove()
