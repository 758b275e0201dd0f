"""Per-step hooks that do nothing are not called at all.

Lightning calls six hooks of every callback (and of the module) on every training step, each
inside a profiler context, whether the callback overrides it or not: with segkit's default
callbacks that is about 80 calls of empty methods, a few hundred Python-level calls, per step.
Lightning skips a hook whose attribute is not callable (``_call_callback_hooks`` and
``_call_lightning_module_hook`` test ``callable(fn)``), so :func:`skip_idle_step_hooks` sets the
per-step hooks that an object inherits unchanged from Lightning's base classes to ``None`` on
that object. Nothing a hook does is lost: only inherited no-ops are skipped; a subclass's own
hooks are kept.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L

# The hooks Lightning calls on every training step (or optimiser step).
STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_zero_grad", "on_before_backward",
              "on_after_backward", "on_before_optimizer_step")


def _idle(obj: object, base: type, hook: str) -> bool:
    return getattr(type(obj), hook, None) is getattr(base, hook)


def skip_idle_step_hooks(callbacks: Iterable[L.Callback], module: L.LightningModule) -> int:
    """Set each per-step hook that ``module`` or a callback inherits as a no-op to ``None``;
    return how many were set.

    Example:
        >>> class Logs(L.Callback):
        ...     def on_train_batch_end(self, *args): print("ran")
        >>> callback = Logs()
        >>> skip_idle_step_hooks([callback], L.LightningModule())
        11
        >>> callback.on_train_batch_start is None, callable(callback.on_train_batch_end)
        (True, True)
    """
    skipped = 0
    for obj, base in [*((callback, L.Callback) for callback in callbacks), (module, L.LightningModule)]:
        for hook in STEP_HOOKS:
            if _idle(obj, base, hook):
                object.__setattr__(obj, hook, None)
                skipped += 1
    return skipped
