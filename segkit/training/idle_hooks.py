"""Per-step hooks that do nothing are not called at all.

Lightning calls six hooks of every callback (and of the module) on every training step, each
inside a profiler context, whether the callback overrides it or not: with segkit's default
callbacks that is about 80 calls of empty methods, a few hundred Python-level calls, per step.
Lightning skips a hook whose attribute is not callable (``_call_callback_hooks`` and
``_call_lightning_module_hook`` test ``callable(fn)``), so :func:`skip_idle_step_hooks` sets the
per-step hooks that an object inherits unchanged from Lightning's base classes to ``None`` on
that object. Nothing a hook does is lost: only inherited no-ops are skipped; a subclass's own
hooks are kept. :func:`skip_unused_gradient_clipping` does the same for the gradient-clipping
hook when the trainer clips nothing.

Each hook call Lightning makes also enters ``trainer.profiler.profile(name)``. Without a
profiler (``trainer.profiler: null``) that is Lightning's ``PassThroughProfiler``, whose
``profile`` is still a generator-based context manager: about 40 of them per step, each a few
Python-level calls. :func:`pass_through_profiling_for_free` gives that profiler one shared
null context instead; a real profiler (``trainer.profiler=simple``, ``advanced``, ...) is left
as it is. :func:`store_training_step_signature` saves Lightning from rebuilding the signature of
``training_step`` at every step.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable

import lightning as L
from lightning.pytorch.profilers import PassThroughProfiler

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


def skip_unused_gradient_clipping(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """If the trainer clips nothing (no ``trainer.gradient_clip_val``) and ``module`` keeps
    Lightning's own ``configure_gradient_clipping``, set that hook to ``None``; return whether it did.

    Lightning calls the hook after every backward pass; its default then checks the trainer's
    clipping settings (enum conversions and all, about 30 us a step on a 2-core CPU) only to
    clip by 0, which does nothing. A module's own ``configure_gradient_clipping`` is kept.

    Example:
        >>> trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                     enable_model_summary=False)
        >>> module = L.LightningModule()
        >>> skip_unused_gradient_clipping(trainer, module), module.configure_gradient_clipping
        (True, None)
        >>> clipping = L.Trainer(gradient_clip_val=0.5, logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> skip_unused_gradient_clipping(clipping, L.LightningModule())
        False
    """
    if trainer.gradient_clip_val or not _idle(module, L.LightningModule, "configure_gradient_clipping"):
        return False
    object.__setattr__(module, "configure_gradient_clipping", None)
    return True


_NULL_CONTEXT = contextlib.nullcontext()


def _shared_null_context(action_name: str) -> contextlib.nullcontext[None]:
    return _NULL_CONTEXT


def pass_through_profiling_for_free(trainer: L.Trainer) -> bool:
    """If ``trainer`` profiles nothing (Lightning's ``PassThroughProfiler``), make its
    ``profile(name)`` return one shared null context; return whether it did.

    Example:
        >>> trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                     enable_model_summary=False)
        >>> pass_through_profiling_for_free(trainer), trainer.profiler.profile("x") is _NULL_CONTEXT
        (True, True)
    """
    if type(trainer.profiler) is not PassThroughProfiler:
        return False
    trainer.profiler.profile = _shared_null_context  # type: ignore[method-assign]
    return True


def store_training_step_signature(module: L.LightningModule) -> bool:
    """Store the signature of ``module``'s ``training_step`` function on it (``__signature__``);
    return whether it was not stored already.

    Before every training step Lightning asks ``inspect.getfullargspec(training_step)`` whether
    the method takes ``batch_idx``, and inspect builds the signature from the code object each
    time (about 10 us on a 2-core CPU); a stored ``__signature__`` is what inspect returns first
    (about 4 us). It is the function's own signature, so every answer is the same.

    Example:
        >>> class Module(L.LightningModule):
        ...     def training_step(self, batch, batch_idx): ...
        >>> store_training_step_signature(Module()), inspect.getfullargspec(Module().training_step).args
        (True, ['self', 'batch', 'batch_idx'])
    """
    function = type(module).training_step
    if not inspect.isfunction(function) or "__signature__" in vars(function):
        return False
    # Not following __wrapped__, as getfullargspec does not: a decorated step gets the same answer.
    function.__signature__ = inspect.signature(function, follow_wrapped=False)  # type: ignore[attr-defined]
    return True
