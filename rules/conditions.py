"""Rule conditions: Jinja2 expressions compiled once, evaluated in the sandbox."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import TemplateError
from jinja2.lexer import TokenStream
from jinja2.parser import Parser

from .fastpath import UNDEFINED, Evaluator, Fallback, compile_fast, evaluate_fast
from .sandbox import BoundedSandbox, TemplateCheckError, check_tree

CONDITION_NAMES = ("payload", "event", "actor")

_env = BoundedSandbox(timeout=0.05, max_output=64 * 1024)


class ConditionError(ValueError):
    """A condition does not compile or failed to evaluate; the message says why."""


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    source: str
    _expression: Callable[..., Any]
    # The same expression as plain closures when it is in the fast subset
    # (``rules.fastpath``); the sandbox decides whenever the fast path cannot.
    _fast: Evaluator | None = None

    def evaluate(self, context: dict[str, Any]) -> bool:
        """True if the condition holds; ``ConditionError`` if it cannot be evaluated."""
        fast = self._fast
        if fast is not None:
            try:
                value = fast(context)
            except Exception:  # Fallback, or a type error the sandbox words properly
                value = UNDEFINED
            if value is not UNDEFINED:
                return bool(value)
        try:
            return bool(_env.evaluate_bounded(self._expression, context))
        except TemplateError as exc:
            raise ConditionError(f"condition failed: {exc}") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ConditionError(f"condition failed: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """An expression whose value is wanted (a deduplication key), not a truth."""

    source: str
    _expression: Callable[..., Any]
    _fast: Evaluator | None = None

    def evaluate(self, context: dict[str, Any]) -> Any:
        """The value; ``ConditionError`` if it cannot be evaluated."""
        if self._fast is not None:
            try:
                return evaluate_fast(self._fast, context)
            except Fallback:
                pass
        try:
            value = _env.evaluate_bounded(self._expression, context)
        except TemplateError as exc:
            raise ConditionError(f"expression failed: {exc}") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ConditionError(f"expression failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, Undefined):
            # A missing field: the value would only blow up later, when used.
            hint = value._undefined_hint or f"{value._undefined_name!r} is undefined"
            raise ConditionError(f"expression failed: {hint}")
        return value


def compile_expression(
    source: str, names: tuple[str, ...] = CONDITION_NAMES
) -> CompiledExpression | None:
    """Compile a value expression with the same checks as a condition."""
    condition = compile_condition(source, names)
    if condition is None:
        return None
    return CompiledExpression(condition.source, condition._expression, condition._fast)


def compile_condition(
    source: str, names: tuple[str, ...] = CONDITION_NAMES
) -> CompiledCondition | None:
    """Compile ``source``; ``None`` for an empty condition (always true).

    ``names``: the variables it may use (a workflow step's condition sees more
    than a rule's: ``rules.workflow.STEP_CONDITION_NAMES``)."""
    source = (source or "").strip()
    if not source:
        return None
    located = locate_syntax_error(source)
    if located is not None:
        raise located
    try:
        tree = _env.parse("{{ (" + source + ") }}")
    except TemplateSyntaxError as exc:
        raise ConditionError(f"syntax error in condition: {exc.message}") from exc
    except RecursionError as exc:
        raise ConditionError("the condition is nested too deeply") from exc
    try:
        check_tree(tree)
        _env.check_source("{{ (" + source + ") }}", names)
    except TemplateCheckError as exc:
        raise ConditionError(str(exc)) from exc
    try:
        expression = _env.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ConditionError(f"syntax error in condition: {exc.message}") from exc
    except RecursionError as exc:
        raise ConditionError("the condition is nested too deeply") from exc
    body = tree.body
    single = len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1
    fast = compile_fast(body[0].nodes[0], names) if single else None
    return CompiledCondition(source, expression, fast)


def locate_syntax_error(source: str) -> ConditionError | None:
    """A syntax error in ``source`` as the user typed it, or ``None``.

    The checks below parse the condition wrapped in ``{{ ( … ) }}``, so Jinja's
    own error would name a ``)`` the user never typed and a line of the wrapper.
    Here ``source`` alone is parsed as one expression, over a token stream that
    remembers where in ``source`` each token starts: the error says the line and
    column of the user's text, and what stands there."""
    end = _position(source, len(source))
    # Where the token the parser stands on starts; set to where lexing stopped
    # when the lexer itself refuses a character or an unbalanced bracket.
    where = {"start": (1, 1), "lexer_stopped_at": None}

    def raw_tokens():
        offset = 0
        try:
            for lineno, kind, value in _env.lexer.tokeniter(source, None, state="variable"):
                where["start"] = _position(source, offset)
                offset += len(value)
                yield lineno, kind, value
        except TemplateSyntaxError:
            where["lexer_stopped_at"] = offset
            raise
        where["start"] = end

    parser = Parser(_env, source, state="variable")
    parser.stream = TokenStream(_env.lexer.wrap(raw_tokens()), None, None)
    try:
        parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError("unexpected text after the condition", 1)
    except TemplateSyntaxError as exc:
        message = (exc.message or "invalid syntax").replace("template", "condition")
        stopped = where["lexer_stopped_at"]
        current = parser.stream.current
        if stopped is not None:
            (line, column), at = _position(source, stopped), f"at {source[stopped]!r}"
            message = re.sub(r" at \d+$", "", message)
        elif current.type == "eof":
            (line, column), at = end, "at the end"
        else:
            (line, column), at = where["start"], f"at {str(current.value)!r}"
        return ConditionError(
            f"syntax error in condition, line {line} column {column} ({at}): {message}"
        )
    except RecursionError:
        return ConditionError("the condition is nested too deeply")
    return None


def _position(text: str, offset: int) -> tuple[int, int]:
    """Line and column (both from 1) of ``offset`` in ``text``."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1
