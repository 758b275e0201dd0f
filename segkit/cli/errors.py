"""User-facing errors: one line saying what is wrong, where, and how to fix it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf.errors import MissingMandatoryValue

from segkit.errors import SegkitError

__all__ = ["SegkitError", "exit_on_user_error"]

T = TypeVar("T")


def user_error_of(error: BaseException) -> SegkitError | None:
    """``error`` or the SegkitError it wraps (Hydra's instantiate wraps what a target raises);
    a required config value left unset (``???``) becomes one too."""
    while error is not None:
        if isinstance(error, SegkitError):
            return error
        if isinstance(error, MissingMandatoryValue):
            key = error.full_key or "a required value"
            return SegkitError(f"{key} is not set; pass {key}=... (the config marks it required: ???)")
        # Hydra wraps errors with `raise ... from`; an error raised while handling another
        # one (not suppressed with `from None`) keeps it as its context.
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)  # type: ignore[assignment]
    return None


def exit_on_user_error(program: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a Hydra task so that a :class:`SegkitError` prints one line and exits 2."""

    def decorate(task: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(task)
        def wrapper(*args: object, **kwargs: object) -> T:
            try:
                return task(*args, **kwargs)
            except Exception as error:
                user_error = user_error_of(error)
                if user_error is None:
                    raise
                print(f"{program}: error: {user_error}", file=sys.stderr)
                from segkit.training.run_dir_guard import discard_fresh_run_dir

                discard_fresh_run_dir()
                # SystemExit is not an Exception, so Hydra lets it through with this code.
                raise SystemExit(2) from None

        return wrapper

    return decorate
