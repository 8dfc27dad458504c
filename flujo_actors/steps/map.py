"""The map step kind: one body pipeline run once per item, at most ``max_concurrency`` at once.

Build it with :meth:`Step.map <flujo_actors.Step.map>`. Like the other
control-flow kinds it is a sibling of the agent step on
:class:`~.base.StepBase` with no agent attempt of its own, so it has none of
the agent options (``max_retries``, validators, plugins, ``fallback``, ...)
and refuses them by name when it is built (see :func:`.options.refuse_unhonoured`): put them on the body's
steps. Every argument is checked here, at build time; only what the items
turn out to be is checked when the step runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from .base import Pipeline, StepBase, as_pipeline
from .callables import Callback, compile_optional
from .options import check_count, refuse_unhonoured
from .strategies import BranchFailureStrategy, MergeSpec, MergeStrategy, check_merge

__all__ = ["MapStep", "item_name"]


def item_name(step: str, index: int) -> str:
    """The name of item ``index``'s result (and path element) in a map step: ``"{step}[{index}]"``."""
    return f"{step}[{index}]"


@refuse_unhonoured
@attrs.define(eq=False, repr=False)
class MapStep(StepBase):
    """Runs ``body`` once per item; output: the outputs in item order, or ``reduce(outputs)``.

    Attributes:
        body: the pipeline run for each item (a Step is wrapped in one).
        items: ``items(data, context?)`` returning an iterable or async
            iterable of items (sync or async); None: the step's input is the iterable.
        max_concurrency: at most this many bodies in flight (None: no limit).
        on_item_failure: ``PROPAGATE`` (the first failing item fails the step
            and cancels the bodies in flight) or ``IGNORE`` (failed items are
            their StepResult in the output).
        merge_strategy: how the items' context copies fold back, in item order.
        reduce: ``reduce(outputs)`` (sync or async), the step's output.
    """

    kind: ClassVar[str] = "map"

    body: Pipeline = attrs.field(default=None, kw_only=True)
    items: Any = attrs.field(default=None, kw_only=True)
    max_concurrency: int | None = attrs.field(default=None, kw_only=True)
    on_item_failure: BranchFailureStrategy = attrs.field(
        default=BranchFailureStrategy.PROPAGATE, kw_only=True
    )
    merge_strategy: MergeSpec = attrs.field(default=MergeStrategy.NO_MERGE, kw_only=True)
    reduce: Any = attrs.field(default=None, kw_only=True)
    compiled_items: Callback | None = attrs.field(init=False, default=None)
    compiled_reduce: Callback | None = attrs.field(init=False, default=None)

    def _validate(self) -> None:
        n = self.name
        self.body = as_pipeline(self.body, owner=n, what="body")
        if self.max_concurrency is not None:
            check_count(
                f"Map step {n!r}",
                "max_concurrency",
                self.max_concurrency,
                minimum=1,
                hint=" Pass None for no limit.",
            )
        self.merge_strategy, self.on_item_failure = check_merge(
            n, self.merge_strategy, self.on_item_failure, failure_arg="on_item_failure"
        )
        self.compiled_items = compile_optional(self.items, what="items", step_name=n, max_args=2)
        # reduce(outputs) only: builtins such as sum take a second positional
        # argument that is not a context.
        self.compiled_reduce = compile_optional(self.reduce, what="reduce", step_name=n, max_args=1)
