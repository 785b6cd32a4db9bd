"""Progress bars on stderr, switched off globally with ``DCSI_DISABLE_PROGRESS=1``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar, overload

from tqdm.auto import tqdm

__all__ = ["progress", "progress_enabled", "set_progress"]

T = TypeVar("T")
_enabled: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on or off (``None`` returns to the environment default)."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    """Whether progress bars are shown (``--no-progress`` / ``DCSI_DISABLE_PROGRESS``)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("DCSI_DISABLE_PROGRESS", "").strip() in ("", "0", "false")


class _Bar(tqdm):
    """A tqdm bar whose last frame is drawn before it closes.

    tqdm redraws at most every ``mininterval`` (1 s here), so without this the last
    updates are usually not drawn and a bar's final frame, which a log keeps, reads
    85-98 %.  A bar never shown (``delay``, or disabled) stays hidden.
    """

    def close(self) -> None:
        if (
            not self.disable
            and self.last_print_n != self.n
            and self.last_print_t >= self.start_t + self.delay
        ):  # drawn at least once
            self.refresh()
        super().close()


@overload
def progress(
    iterable: None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    leave: bool = False,
    **kwargs: Any,
) -> Any: ...


@overload
def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    leave: bool = False,
    **kwargs: Any,
) -> Iterator[T] | Any: ...


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    leave: bool = False,
    **kwargs: Any,
) -> Iterator[T] | Any:
    """Wrap ``iterable`` in a tqdm bar on stderr (a silent bar when disabled).

    Returns the tqdm object, so ``bar.update(n)`` and ``with progress(...) as bar``
    work as in tqdm.  ``mininterval`` defaults to one second so short steps stay quiet;
    a bar that was shown draws its final count when it closes (it ends at 100 %).
    """
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("delay", 1.0)
    return _Bar(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        leave=leave,
        disable=not progress_enabled(),
        **kwargs,
    )
