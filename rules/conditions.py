"""Rule conditions: Jinja2 expressions compiled once, evaluated in the sandbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.exceptions import TemplateError

from .sandbox import BoundedSandbox, TemplateCheckError, check_tree

CONDITION_NAMES = ("payload", "event", "actor")

_env = BoundedSandbox(timeout=0.05, max_output=64 * 1024)


class ConditionError(ValueError):
    """A condition does not compile or failed to evaluate; the message says why."""


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    source: str
    _expression: Callable[..., Any]

    def evaluate(self, context: dict[str, Any]) -> bool:
        """True if the condition holds; ``ConditionError`` if it cannot be evaluated."""
        try:
            return bool(_env.evaluate_bounded(self._expression, context))
        except TemplateError as exc:
            raise ConditionError(f"condition failed: {exc}") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ConditionError(f"condition failed: {type(exc).__name__}: {exc}") from exc


def compile_condition(source: str) -> CompiledCondition | None:
    """Compile ``source``; ``None`` for an empty condition (always true)."""
    source = (source or "").strip()
    if not source:
        return None
    try:
        tree = _env.parse("{{ (" + source + ") }}")
    except TemplateSyntaxError as exc:
        raise ConditionError(f"syntax error in condition: {exc.message}") from exc
    except RecursionError as exc:
        raise ConditionError("the condition is nested too deeply") from exc
    try:
        check_tree(tree)
        _env.check_source("{{ (" + source + ") }}", CONDITION_NAMES)
    except TemplateCheckError as exc:
        raise ConditionError(str(exc)) from exc
    try:
        expression = _env.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ConditionError(f"syntax error in condition: {exc.message}") from exc
    except RecursionError as exc:
        raise ConditionError("the condition is nested too deeply") from exc
    return CompiledCondition(source, expression)
