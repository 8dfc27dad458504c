"""Fingerprints stored by earlier versions still match: stored runs must still resume.

The expected strings were computed on main before the step kinds became
sibling classes (#13), with ``{M}`` standing for this module's name. A
change of the class model that changed them would make every stored run
refuse to resume with "a different pipeline".
"""

from __future__ import annotations

from typing import Any

from flujo_actors import Pipeline, Step
from flujo_actors.policy.fingerprint import pipeline_fingerprint

M = __name__


async def one(x: Any) -> Any:
    return x


async def two(x: Any) -> Any:
    return x


def router(data: Any) -> list[str]:
    return ["a"]


def every_kind() -> Pipeline:
    s = Step.from_callable
    return Pipeline(
        steps=[
            s(one, fallback=s(two, name="rescue")),
            Step.parallel("fan", {"a": s(one), "b": s(one) >> s(two)}),
            Step.loop_until("loop", s(two), lambda out, ctx: True),
            Step.branch_on("cond", lambda d, c: 1, {1: s(one)}, default_branch_pipeline=s(two)),
            Pipeline(steps=[s(one)], name="inner").as_step("nested"),
            Step.dynamic_parallel_branch("route", router, {"a": s(one), "b": s(two) >> s(one)}),
            Pipeline(steps=[s(two)], name="fresh").as_step("sub", inherit_context=False),
        ],
        name="tree",
    )


# Computed on main at 37bb90b (before the sibling step classes); "{M}" is this module.
EVERY_KIND = (
    '{"fingerprint":1,"pipeline":{"name":"tree","steps":[{"agent":"{M}:one","fallback":{"agen'
    't":"{M}:two","kind":"agent","name":"rescue"},"kind":"agent","name":"one"},{"branches":[['
    '"\'a\'",{"name":"pipeline","steps":[{"agent":"{M}:one","kind":"agent","name":"one"}]}],["\''
    'b\'",{"name":"pipeline","steps":[{"agent":"{M}:one","kind":"agent","name":"one"},{"agent"'
    ':"{M}:two","kind":"agent","name":"two"}]}]],"kind":"parallel","name":"fan"},{"body":{"na'
    'me":"pipeline","steps":[{"agent":"{M}:two","kind":"agent","name":"two"}]},"kind":"loop",'
    '"name":"loop"},{"branches":[["1",{"name":"pipeline","steps":[{"agent":"{M}:one","kind":"'
    'agent","name":"one"}]}]],"default":{"name":"pipeline","steps":[{"agent":"{M}:two","kind"'
    ':"agent","name":"two"}]},"kind":"conditional","name":"cond"},{"kind":"pipeline","name":"'
    'nested","pipeline":{"name":"inner","steps":[{"agent":"{M}:one","kind":"agent","name":"on'
    'e"}]}},{"agent":"{M}:router","branches":[["\'a\'",{"name":"pipeline","steps":[{"agent":"{M'
    '}:one","kind":"agent","name":"one"}]}],["\'b\'",{"name":"pipeline","steps":[{"agent":"{M}:'
    'two","kind":"agent","name":"two"},{"agent":"{M}:one","kind":"agent","name":"one"}]}]],"k'
    'ind":"router","name":"route"},{"kind":"pipeline","name":"sub","pipeline":{"name":"fresh"'
    ',"steps":[{"agent":"{M}:two","kind":"agent","name":"two"}]}}]}}'
)
ONE_STEP = (
    '{"fingerprint":1,"pipeline":{"name":"pipeline","steps":[{"agent":"{M}:one","kind":"agent",'
    '"name":"one"}]}}'
)


def test_fingerprints_computed_before_the_sibling_classes_are_unchanged() -> None:
    assert pipeline_fingerprint(every_kind()) == EVERY_KIND.replace("{M}", M)
    one_step = Pipeline.from_step(Step.from_callable(one))
    assert pipeline_fingerprint(one_step) == ONE_STEP.replace("{M}", M)
