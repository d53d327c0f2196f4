"""The seven hook decorators, and running a hook chain around an action.

A hook is a method marked with the kind of hook it is. ``Job.__init_subclass__``
collects the marked methods, base classes first and then in definition order,
so a shared ``ApplicationJob`` base runs its hooks before a subclass's. A
subclass that redefines a hook method under the same name replaces it in place
(plain Python overriding); redefining it without the decorator removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from jobadapter.errors import Abort

if TYPE_CHECKING:
    from jobadapter.job import Job

KINDS = (
    "before_enqueue",
    "around_enqueue",
    "after_enqueue",
    "before_perform",
    "around_perform",
    "after_perform",
    "after_discard",
)
HOOK_ATTRIBUTE = "__jobadapter_hook__"

F = TypeVar("F", bound=Callable[..., Any])


def _marker(kind: str) -> Callable[[F], F]:
    def mark(method: F) -> F:
        setattr(method, HOOK_ATTRIBUTE, kind)
        return method

    mark.__name__ = kind
    mark.__doc__ = f"Mark a job method as a ``{kind}`` hook."
    return mark


before_enqueue = _marker("before_enqueue")
around_enqueue = _marker("around_enqueue")
after_enqueue = _marker("after_enqueue")
before_perform = _marker("before_perform")
around_perform = _marker("around_perform")
after_perform = _marker("after_perform")
after_discard = _marker("after_discard")


def collect(job_class: type) -> dict[str, tuple[str, ...]]:
    """Hook method names by kind for ``job_class``: bases first, then definition order."""
    merged: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for klass in reversed(job_class.__mro__):
        for name, value in vars(klass).items():
            kind = getattr(value, HOOK_ATTRIBUTE, None) if callable(value) else None
            for other_kind, names in merged.items():
                if name in names and other_kind != kind:
                    names.remove(name)
            if kind in merged and name not in merged[kind]:
                merged[kind].append(name)
    return {kind: tuple(names) for kind, names in merged.items()}


class Halted(Exception):
    """A ``before_*`` hook raised `Abort`: the action did not run."""


def run_chain(job: Job, stage: str, action: Callable[[], Any], *, run_after: bool = True) -> Any:
    """Run ``before_<stage>`` hooks, ``action`` wrapped in the ``around_<stage>`` hooks, then
    ``after_<stage>`` hooks (unless ``run_after`` is False: a bulk enqueue runs them once the
    batch is accepted). Raises `Halted` when a before hook aborts.

    Returns what ``action`` returned, whatever the around hooks return (as Rails' callbacks
    return the wrapped block's value); None when an around hook never proceeded."""
    hooks = type(job)._hook_names
    befores = hooks[f"before_{stage}"]
    arounds = hooks[f"around_{stage}"]
    afters = hooks[f"after_{stage}"]
    if not (befores or arounds or afters):
        return action()
    for name in befores:
        try:
            getattr(job, name)()
        except Abort as abort:
            raise Halted(name) from abort
    produced: list[Any] = []

    def innermost() -> Any:
        produced.append(action())
        return produced[-1]

    call: Callable[[], Any] = innermost
    for name in reversed(arounds):
        call = _wrap(getattr(job, name), call)
    call()
    if run_after:
        for name in afters:
            getattr(job, name)()
    return produced[-1] if produced else None


def run_after(job: Job, stage: str) -> None:
    """Run the ``after_<stage>`` hooks alone."""
    for name in type(job)._hook_names[f"after_{stage}"]:
        getattr(job, name)()


def _wrap(around: Callable[[Callable[[], Any]], Any], inner: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: around(inner)
