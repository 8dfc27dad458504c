"""Reading usage from outputs (pure policy): counts, explicit attributes, SDK shapes, extractors."""

from __future__ import annotations

import decimal
import enum
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import (
    PricingNotConfiguredError,
    Usage,
    UsageLimits,
    UsageReportError,
    register_usage_extractor,
    usage_of,
)
from flujo_actors.policy import usage as usage_policy
from flujo_actors.policy.stream import ChunkCollector
from flujo_actors.policy.usage import UsageUnreadable, charge_of
from flujo_actors.results import whole_count


class Big(enum.IntEnum):
    N = 5000


class MyInt(int):
    pass


@attrs.define
class Reported:
    value: Any
    cost_usd: Any = None
    token_counts: Any = None


# -- integral counts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5000, 5000),
        (MyInt(5000), 5000),
        (Big.N, 5000),
        (5000.0, 5000),
        (Decimal("5000"), 5000),
        (Decimal("5000.000"), 5000),
        ("5000", 5000),
        (0, 0),
    ],
)
def test_integral_token_counts_count(value: Any, expected: int) -> None:
    reading = usage_of(Reported("x", cost_usd=0, token_counts=value))
    assert reading == Usage(cost_usd=Decimal(0), tokens=expected)
    assert type(reading.tokens) is int


@pytest.mark.parametrize("value", [True, False, 2.5, -1, float("nan"), float("inf"), "abc", [1]])
def test_non_integral_token_counts_fail_clearly(value: Any) -> None:
    with pytest.raises(UsageReportError) as info:
        usage_of(Reported("x", token_counts=value), step_name="llm")
    assert str(info.value) == (
        f"Step 'llm': its output reports token_counts={value!r}; token counts must be a whole "
        "number >= 0 (int, integral float or Decimal, or numeric str)."
    )


@given(st.integers(min_value=0, max_value=10**30))
def test_whole_count_round_trips_every_spelling(n: int) -> None:
    for spelling in (n, MyInt(n), str(n), Decimal(n)):
        assert whole_count(spelling) == n


@pytest.mark.parametrize("value", ["-3", "1e400x", "4.5", True])
def test_whole_count_refuses(value: Any) -> None:
    assert whole_count(value) is None


def test_usage_value_sums_input_and_output_and_validates() -> None:
    assert Usage(input_tokens=3, output_tokens=4).tokens == 7
    assert Usage(tokens=10, input_tokens=3, output_tokens=4).tokens == 10
    assert Usage(cost_usd=0.1).cost_usd == Decimal("0.1")
    with pytest.raises(ValueError, match=r"^Usage: tokens must be a whole number >= 0 .*got -1\.$"):
        Usage(tokens=-1)
    with pytest.raises(ValueError, match=r"^Usage: cost_usd must be a finite number >= 0 "):
        Usage(cost_usd="free")


# -- what an output reports -----------------------------------------------------------------


def test_plain_outputs_carry_no_usage() -> None:
    for plain in ("text", 3, 2.5, None, b"x", {"usage": 1}, [1], (1,)):
        assert usage_of(plain) is None
    assert usage_of(SimpleNamespace(answer=42)) is None


def test_explicit_attributes_win_over_an_sdk_usage() -> None:
    both = SimpleNamespace(cost_usd=0.5, token_counts=3, usage=SimpleNamespace(total_tokens=99))
    assert usage_of(both) == Usage(cost_usd=Decimal("0.5"), tokens=3)


def _openai_chat() -> SimpleNamespace:
    return SimpleNamespace(
        id="chatcmpl-1",
        object="chat.completion",
        model="gpt-4o",
        choices=[],
        usage=SimpleNamespace(prompt_tokens=12, completion_tokens=30, total_tokens=42),
    )


def test_openai_chat_completion_shape() -> None:
    assert usage_of(_openai_chat()) == Usage(
        tokens=42, input_tokens=12, output_tokens=30, model="gpt-4o"
    )


def test_openai_responses_shape() -> None:
    resp = SimpleNamespace(
        model="gpt-4o-mini",
        output=[],
        usage=SimpleNamespace(input_tokens=5, output_tokens=6, total_tokens=11),
    )
    assert usage_of(resp) == Usage(tokens=11, input_tokens=5, output_tokens=6, model="gpt-4o-mini")


def test_anthropic_message_counts_cached_prompt_tokens() -> None:
    msg = SimpleNamespace(
        type="message",
        model="claude-sonnet-4-5",
        usage=SimpleNamespace(
            input_tokens=10,
            output_tokens=20,
            cache_creation_input_tokens=3,
            cache_read_input_tokens=None,
        ),
    )
    assert usage_of(msg) == Usage(
        tokens=33, input_tokens=13, output_tokens=20, model="claude-sonnet-4-5"
    )


class LiteLLMLike:
    """The duck-typed shape of litellm's ModelResponse (litellm itself is not installed)."""

    def __init__(self, cost: Any) -> None:
        self.model = "gpt-4o"
        self.choices: list[Any] = []
        self.usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
        self._hidden_params = {"response_cost": cost}


def test_litellm_response_cost_is_the_cost() -> None:
    assert usage_of(LiteLLMLike(0.00125)) == Usage(
        cost_usd=Decimal("0.00125"), tokens=150, input_tokens=100, output_tokens=50, model="gpt-4o"
    )
    assert usage_of(LiteLLMLike(None)).cost_usd is None  # type: ignore[union-attr]
    with pytest.raises(UsageReportError, match=r"^Step 'x': its output reports _hidden_params"):
        usage_of(LiteLLMLike("lots"), step_name="x")


class RunUsage:
    input_tokens = 7
    output_tokens = 8

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class PydanticAIResult:
    """The duck-typed shape of a pydantic-ai run result: ``usage()`` is a method."""

    output = "answer"

    def usage(self) -> RunUsage:
        return RunUsage()

    def all_messages(self) -> list[Any]:
        return [SimpleNamespace(parts=[]), SimpleNamespace(model_name="gpt-4o", parts=[])]


def test_pydantic_ai_result_shape() -> None:
    assert usage_of(PydanticAIResult()) == Usage(
        tokens=15, input_tokens=7, output_tokens=8, model="gpt-4o"
    )


def test_an_object_with_a_usage_nobody_understands_is_unreadable() -> None:
    odd = SimpleNamespace(usage=SimpleNamespace(credits=3))
    assert usage_of(odd) == UsageUnreadable(
        "types.SimpleNamespace", "usage of type SimpleNamespace"
    )
    assert usage_of(SimpleNamespace(usage=None)) == UsageUnreadable(
        "types.SimpleNamespace", "usage=None"
    )


# -- registered extractors ----------------------------------------------------------------


class Reply:
    def __init__(self, n: int) -> None:
        self.n = n
        self.usage = "opaque"


class SubReply(Reply):
    pass


def test_registered_extractor_reads_a_type_and_its_subclasses() -> None:
    assert isinstance(usage_of(Reply(1)), UsageUnreadable)  # cached before registering
    register_usage_extractor(Reply, lambda r: Usage(tokens=r.n, model="m"))
    try:
        assert usage_of(Reply(4)) == Usage(tokens=4, model="m")
        assert usage_of(SubReply(5)) == Usage(tokens=5, model="m")
    finally:
        with usage_policy._lock:
            usage_policy._registered.pop(Reply)
            usage_policy._by_type.clear()


def test_an_extractor_that_returns_something_else_fails_clearly() -> None:
    class Odd:
        pass

    register_usage_extractor(Odd, lambda r: 12)  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(UsageReportError) as info:
            usage_of(Odd(), step_name="s")
        assert str(info.value) == (
            "Step 's': the usage extractor "
            "test_an_extractor_that_returns_something_else_fails_clearly.<locals>.<lambda> "
            "registered for test_usage.test_an_extractor_that_returns_something_else_fails_clearly"
            ".<locals>.Odd returned 12; it must return a flujo_actors.Usage."
        )
    finally:
        with usage_policy._lock:
            usage_policy._registered.pop(Odd)
            usage_policy._by_type.clear()


def test_register_usage_extractor_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"^register_usage_extractor: type_ must be a class, got"):
        register_usage_extractor("Reply", lambda r: Usage())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^register_usage_extractor: fn must be a callable"):
        register_usage_extractor(Reply, 3)  # type: ignore[arg-type]


# -- charging: pricing and limits --------------------------------------------------------------

COST_LIMIT = UsageLimits(total_cost_usd_limit=1)
TOKEN_LIMIT = UsageLimits(total_tokens_limit=10)


def test_unreadable_usage_is_zero_without_limits_and_an_error_under_one() -> None:
    odd = UsageUnreadable("app.Reply", "usage=None")
    assert charge_of(odd, step_name="s", limits=None) == (Decimal(0), 0)
    assert charge_of(odd, step_name="s", limits=UsageLimits()) == (Decimal(0), 0)
    with pytest.raises(UsageReportError) as info:
        charge_of(odd, step_name="s", limits=TOKEN_LIMIT)
    assert str(info.value) == (
        "Step 's': its output of type app.Reply has a usage attribute that no usage extractor "
        "understands (usage=None), so its usage cannot be counted under total_tokens_limit. "
        "Register one: register_usage_extractor(Reply, lambda out: Usage(tokens=..., "
        "cost_usd=...))."
    )


def test_tokens_of_a_known_model_are_priced() -> None:
    u = Usage(input_tokens=1000, output_tokens=100, model="gpt-4o")
    # gpt-4o: $2.50 / M input, $10 / M output
    assert charge_of(u, step_name="s", limits=None) == (Decimal("0.0035"), 1100)


def test_pricing_ignores_the_ambient_decimal_precision() -> None:
    u = Usage(input_tokens=1234567, output_tokens=7654321, model="gpt-4o")
    with decimal.localcontext(prec=2):
        cost, _ = charge_of(u, step_name="s", limits=None)
    assert cost == Decimal("3.0864175") + Decimal("76.54321")


def test_unpriceable_tokens_under_a_cost_limit_raise_pricing_not_configured() -> None:
    u = Usage(input_tokens=10, output_tokens=5, model="my-local-llama")
    assert charge_of(u, step_name="s", limits=TOKEN_LIMIT) == (Decimal(0), 15)
    with pytest.raises(PricingNotConfiguredError) as info:
        charge_of(u, step_name="s", limits=COST_LIMIT)
    assert str(info.value) == (
        "Step 's': its output reports 15 tokens but no cost, and total_cost_usd_limit is set; "
        "the price table (genai-prices) knows no price for model 'my-local-llama'. Install the "
        "price table (pip install 'flujo-actors[prices]'), report cost_usd from the agent, or "
        "register a usage extractor that returns cost_usd."
    )
    assert (info.value.step, info.value.model) == ("s", "my-local-llama")
    with pytest.raises(PricingNotConfiguredError, match=r"it names no model to price them by"):
        charge_of(Usage(tokens=5), step_name="s", limits=COST_LIMIT)


def test_tokens_only_explicit_report_under_a_cost_limit_is_refused_not_zero() -> None:
    reading = usage_of(Reported("x", token_counts=40))
    with pytest.raises(PricingNotConfiguredError, match=r"reports 40 tokens but no cost"):
        charge_of(reading, step_name="s", limits=COST_LIMIT)


# -- streams -------------------------------------------------------------------------------------


def test_stream_usage_from_openai_final_chunk_and_yielded_usage() -> None:
    c = ChunkCollector()
    chunk = SimpleNamespace(model="gpt-4o", choices=[], usage=None)
    final = SimpleNamespace(
        model="gpt-4o",
        choices=[],
        usage=SimpleNamespace(prompt_tokens=3, completion_tokens=2, total_tokens=5),
    )
    assert [c.add(x) for x in ("a", chunk, "b", final, Usage(tokens=7))] == [
        True,
        True,
        True,
        True,
        False,
    ]
    assert c.chunks == ["a", chunk, "b", final]
    assert c.readings() == [
        Usage(tokens=5, input_tokens=3, output_tokens=2, model="gpt-4o"),
        Usage(tokens=7),
    ]


def test_stream_usage_from_anthropic_events_takes_the_last_cumulative_delta() -> None:
    def ev(kind: str, **kw: Any) -> SimpleNamespace:
        return SimpleNamespace(type=kind, **kw)

    start = ev(
        "message_start",
        message=SimpleNamespace(
            model="claude-haiku-4-5", usage=SimpleNamespace(input_tokens=25, output_tokens=1)
        ),
    )
    c = ChunkCollector()
    for e in (
        start,
        ev("content_block_delta", delta=SimpleNamespace(text="hi")),
        ev("message_delta", usage=SimpleNamespace(output_tokens=4)),
        ev("message_delta", usage=SimpleNamespace(output_tokens=9)),
        ev("message_stop"),
    ):
        assert c.add(e)
    assert c.readings() == [
        Usage(tokens=34, input_tokens=25, output_tokens=9, model="claude-haiku-4-5")
    ]
    assert ChunkCollector().readings() is None


# -- the explicit reading's cache of float costs ----------------------------------------


@attrs.define
class Costed:
    cost_usd: Any = None
    token_counts: Any = None


def test_a_repeated_float_cost_is_read_once_and_gives_the_same_exact_reading() -> None:
    usage_policy._FLOAT_READINGS.clear()
    first = usage_of(Costed(0.001, 3))
    again = usage_of(Costed(0.001, 3))
    assert first == Usage(cost_usd=Decimal("0.001"), tokens=3)
    assert again is first  # from the cache: immutable, so shared
    assert usage_of(Costed(0.001)) == Usage(cost_usd=Decimal("0.001"))  # another key
    assert charge_of(again, step_name="s", limits=None) == (Decimal("0.001"), 3)


@pytest.mark.parametrize(
    ("cost", "tokens", "expected"),
    [
        (-0.0, None, Usage(cost_usd=Decimal("-0.0"))),  # zero is never cached: 0.0 == -0.0
        (0.0, None, Usage(cost_usd=Decimal("0.0"))),
        (0.5, Big.N, Usage(cost_usd=Decimal("0.5"), tokens=5000)),  # an int subclass: not cached
        (0.5, 7.0, Usage(cost_usd=Decimal("0.5"), tokens=7)),
        (0.5, 7, Usage(cost_usd=Decimal("0.5"), tokens=7)),
    ],
)
def test_cached_readings_never_conflate_inputs_of_other_types(
    cost: float, tokens: Any, expected: Usage
) -> None:
    usage_policy._FLOAT_READINGS.clear()
    usage_of(Costed(-cost if cost == 0 else cost, tokens))  # warm with its twin
    got = usage_of(Costed(cost, tokens))
    assert isinstance(got, Usage)
    assert got == expected
    assert str(got.cost_usd) == str(expected.cost_usd)


def test_a_float_cost_with_bad_tokens_still_fails_every_time() -> None:
    usage_policy._FLOAT_READINGS.clear()
    for _ in range(2):
        with pytest.raises(
            UsageReportError,
            match=r"^its output reports token_counts=-1; token counts must be a whole number "
            r">= 0 \(int, integral float or Decimal, or numeric str\)\.$",
        ):
            usage_of(Costed(0.25, -1))
    assert usage_policy._FLOAT_READINGS == {}


def test_the_float_readings_cache_is_bounded() -> None:
    usage_policy._FLOAT_READINGS.clear()
    for i in range(1, usage_policy._FLOAT_READINGS_MAX + 10):
        assert usage_of(Costed(i / 1000)) == Usage(cost_usd=Decimal(repr(i / 1000)))
    assert len(usage_policy._FLOAT_READINGS) <= usage_policy._FLOAT_READINGS_MAX


def test_a_reported_cost_takes_the_form_of_a_sum_and_is_charged_as_it_is() -> None:
    # A sum starts at 0: Decimal("1E+1") + 0 is Decimal("10"), -0.0 + 0 is 0.0. The
    # reading has that form already, so charging it needs no arithmetic per step.
    assert str(Usage(cost_usd=Decimal("1E+1")).cost_usd) == "10"
    assert str(Usage(cost_usd=-0.0).cost_usd) == "0.0"
    assert str(Usage(cost_usd=Decimal("0.0010")).cost_usd) == "0.0010"
    usage_policy._FLOAT_READINGS.clear()
    first = usage_of(Costed(0.001, 3))
    assert isinstance(first, Usage)
    for _ in range(3):
        cost, tokens = charge_of(usage_of(Costed(0.001, 3)), step_name="s", limits=None)
        assert (cost, tokens) == (Decimal("0.001"), 3)
        assert cost is first.cost_usd  # one object for every step: the governor counts it
