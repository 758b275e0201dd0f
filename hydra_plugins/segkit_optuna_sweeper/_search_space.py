"""Hydra sweep overrides (``choice``, ``interval``, ``range``, ...) as Optuna distributions.

Hydra's plugin scan skips modules whose name starts with ``_``: this one (and optuna with it)
is imported only when a sweep runs, not by every Hydra application.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    Quote,
    QuotedString,
    RangeSweep,
    Transformer,
    ValueType,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchParam:
    """One searched override: its Optuna distribution and how a sampled value is written back."""

    key: str
    distribution: BaseDistribution
    # Categorical only: the override text of each choice, in the order of the choices.
    choice_texts: tuple[str, ...] = ()

    def override(self, value: Any) -> str:
        """``key=value`` for a value sampled from ``distribution``."""
        if isinstance(self.distribution, CategoricalDistribution):
            return f"{self.key}={self.choice_texts[self.distribution.choices.index(value)]}"
        if isinstance(self.distribution, IntDistribution):
            return f"{self.key}={int(value)}"
        return f"{self.key}={float(value)!r}"


@dataclass
class SearchSpace:
    """The overrides passed to every trial unchanged, and the searched ones by key."""

    fixed: list[str] = field(default_factory=list)
    params: dict[str, SearchParam] = field(default_factory=dict)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {key: param.distribution for key, param in self.params.items()}

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then ``key=value`` of its sampled ``values``."""
        return [*self.fixed, *(self.params[key].override(value) for key, value in values.items())]


def parse_search_space(
    params: Mapping[str, str], arguments: Sequence[str] = (), config_loader: Any = None
) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` and the command line's ``arguments``.

    A sweep on the command line (``model.depth=1,2``) adds to or replaces an entry of
    ``params``; a plain ``key=value`` goes to every trial and takes ``key`` out of the search.
    An unsupported form raises ValueError naming the override.

    >>> space = parse_search_space({"lr": "tag(log, interval(1e-4, 1e-2))", "width": "choice(8, 16)"}, ["depth=2"])
    >>> space.distributions["lr"]
    FloatDistribution(high=0.01, log=True, low=0.0001, step=None)
    >>> space.overrides({"lr": 0.001, "width": 16})
    ['depth=2', 'lr=0.001', 'width=16']
    """
    parser = OverridesParser.create(config_loader=config_loader)
    fixed: dict[str, str] = {}
    searched: dict[str, SearchParam] = {}

    def add(override: Override, from_command_line: bool) -> None:
        key = override.get_key_element()
        if from_command_line and key in searched and not override.is_sweep_override():
            log.info("%s is set on the command line: not searched", key)
        fixed.pop(key, None)
        searched.pop(key, None)
        if override.is_sweep_override():
            searched[key] = search_param(override, parser)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"

    for key, value in params.items():
        try:
            (override,) = parser.parse_overrides([f"{key}={value}"])
        except HydraException as e:
            raise ValueError(f"cannot parse search space entry '{key}={value}': {e}") from None
        add(override, from_command_line=False)
    for override in parser.parse_overrides(list(arguments)):
        add(override, from_command_line=True)
    return SearchSpace(list(fixed.values()), searched)


def search_param(override: Override, parser: OverridesParser) -> SearchParam:
    """The Optuna distribution of one sweep override; ValueError when it has none."""
    try:
        distribution, texts = _distribution(override, parser)
    except (ValueError, HydraException) as e:
        raise ValueError(f"cannot search '{override.input_line}' with Optuna: {e}") from None
    return SearchParam(override.get_key_element(), distribution, texts)


def _distribution(override: Override, parser: OverridesParser) -> tuple[BaseDistribution, tuple[str, ...]]:
    sweep = override.value()
    tags = set(getattr(sweep, "tags", ()))
    if tags - {"log"}:
        raise ValueError(f"unsupported tag(s) {sorted(tags - {'log'})}; only 'log' is understood")
    log_scale = "log" in tags
    if isinstance(sweep, ChoiceSweep) or override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        if log_scale:
            raise ValueError("tag 'log' applies to interval() and range(), not to choices")
        elements = sweep.list if isinstance(sweep, ChoiceSweep) else list(override.sweep_string_iterator())
        choices, texts = zip(*(_choice(element, parser) for element in elements))
        return CategoricalDistribution(choices), texts
    if isinstance(sweep, RangeSweep):
        bounds = (sweep.start, sweep.stop, sweep.step)
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            raise ValueError("range() of floats is not supported; use interval() or choice()")
        values = range(*bounds)  # Hydra's range() excludes its stop, like Python's
        if not values:
            raise ValueError("the range is empty")
        return IntDistribution(min(values), max(values), log=log_scale, step=abs(sweep.step)), ()
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):  # int(interval(...))
            return IntDistribution(sweep.start, sweep.end, log=log_scale), ()
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale), ()
    raise ValueError(f"unsupported sweep type {override.value_type}")


def _choice(element: Any, parser: OverridesParser) -> tuple[Any, str]:
    """A choice as an Optuna choice (a scalar) and as the override text that gives it back."""
    if isinstance(element, QuotedString):
        return element.text, element.with_quotes()
    text = Transformer.str(element)
    if isinstance(element, (list, dict)):
        return text, text  # Optuna's choices are scalars: the text stands for the value
    if isinstance(element, str) and _parsed(parser, text) != element:
        # A string that reads as something else unquoted: choice('8'), choice('true').
        text = QuotedString(text=element, quote=Quote.single).with_quotes()
    return element, text


def _parsed(parser: OverridesParser, text: str) -> Any:
    try:
        return parser.parse_overrides([f"key={text}"])[0].value()
    except HydraException:
        return None
