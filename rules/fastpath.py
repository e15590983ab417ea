"""A direct evaluator for the common, plain subset of condition expressions.

Why: matching evaluates every candidate rule's condition for every event.
Through Jinja2's sandbox each evaluation builds a template context, runs a
generator and sets the size and time bounds: about 10 µs, which capped
``RuleIndex.match`` at ~9,000 events/s with 1,000 rules over 100 event types
(10 candidates per event). Most conditions are comparisons of payload values
(``payload.total > 100 and payload.status == 'paid'``), which need none of
that: compiled here into nested closures they take well under a microsecond
(see BENCHMARKS.md, "rule matching").

Safety and sameness: only a closed set of node types is compiled, over JSON
data only (dicts, lists, strings, numbers, booleans, None): names from the
context, constants, attribute and item access on dicts and lists, comparisons,
``and``/``or``/``not``, ``if``-``else``, list and tuple literals, arithmetic
on plain numbers of bounded size, the tests ``defined``, ``none``, ... and the
filters ``length``, ``lower``, ``upper``. No call, no loop, nothing that can
grow. Anything else compiles to ``None`` (the sandbox is used, as before).
Whenever the fast path meets something it does not handle at run time (an
undefined value, a type it does not know, any exception) it raises
``Fallback`` and the sandbox evaluates the expression instead, so results
and error messages are the sandbox's own; a test compares both on many
expressions and payloads.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from numbers import Number
from typing import Any

from jinja2 import nodes


class Fallback(Exception):
    """The fast path cannot say; ask the sandbox."""


class _Undefined:
    __slots__ = ()


UNDEFINED = _Undefined()
Evaluator = Callable[[Mapping[str, Any]], Any]

# A dict's own attributes win over its keys in Jinja (``payload.items`` is the
# method): such names are never compiled.
DICT_ATTRIBUTES = frozenset(dir(dict))
NAMES = frozenset({"payload", "event", "actor"})
MAX_NUMBER = 2**53
COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
TESTS: dict[str, Callable[[Any], bool]] = {
    "defined": lambda v: v is not UNDEFINED,
    "undefined": lambda v: v is UNDEFINED,
    "none": lambda v: v is None,
    "boolean": lambda v: v is True or v is False,
    "true": lambda v: v is True,
    "false": lambda v: v is False,
    "number": lambda v: isinstance(v, Number),
    "integer": lambda v: isinstance(v, int) and v is not True and v is not False,
    "float": lambda v: isinstance(v, float),
    "string": lambda v: isinstance(v, str),
    "mapping": lambda v: isinstance(v, Mapping),
}
ARITHMETIC = {
    nodes.Add: operator.add,
    nodes.Sub: operator.sub,
    nodes.Mul: operator.mul,
    nodes.Div: operator.truediv,
    nodes.FloorDiv: operator.floordiv,
    nodes.Mod: operator.mod,
}


def _plain_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and -MAX_NUMBER < value < MAX_NUMBER
    )


def _defined(value: Any) -> Any:
    if value is UNDEFINED:
        raise Fallback
    return value


def _item(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        if isinstance(key, str) and key in container:
            return container[key]
        raise Fallback  # Jinja would look for an attribute next
    if isinstance(container, list) and isinstance(key, int) and not isinstance(key, bool):
        if -len(container) <= key < len(container):
            return container[key]
    raise Fallback


def _attribute(container: Any, name: str) -> Any:
    if isinstance(container, dict):
        return container.get(name, UNDEFINED)
    raise Fallback


def compile_fast(node: nodes.Node, names: Iterable[str] = NAMES) -> Evaluator | None:
    """An evaluator for ``node`` (an expression), or ``None`` if it has parts
    outside the subset. ``names``: the context names it may read (a workflow
    step's condition also reads ``read``, ``prefs``, ... : plain data the
    runner builds, ``rules.workflow.STEP_CONDITION_NAMES``)."""
    try:
        return _compile(node, frozenset(names))
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


_NOT_CONSTANT = object()


def _constant(node: nodes.Node) -> Any:
    """The value of a constant node (a literal, or a list or tuple of them)."""
    if isinstance(node, nodes.Const):
        value = node.value
        if value is None or isinstance(value, str | int | float | bool):
            return value
        return _NOT_CONSTANT
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_constant(item) for item in node.items]
        if any(item is _NOT_CONSTANT for item in items):
            return _NOT_CONSTANT
        # A list literal is rebuilt per evaluation in Jinja; ``in`` and ``==``
        # against it behave the same on a tuple, which nothing can change.
        return tuple(items) if isinstance(node, nodes.Tuple) else items
    return _NOT_CONSTANT


def _path(node: nodes.Node, names: frozenset[str]) -> tuple[str, list[tuple[bool, Any]]] | None:
    """``payload.a.b[0]['c']`` as (name, [(is_attribute, key), ...]), or None."""
    steps: list[tuple[bool, Any]] = []
    while True:
        if isinstance(node, nodes.Getattr):
            if node.attr in DICT_ATTRIBUTES or node.attr.startswith("_"):
                raise _Unsupported
            steps.append((True, node.attr))
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = node.arg.value
            if isinstance(key, str) and (key in DICT_ATTRIBUTES or key.startswith("_")):
                raise _Unsupported
            if not isinstance(key, str | int) or isinstance(key, bool):
                return None
            steps.append((False, key))
        elif isinstance(node, nodes.Name):
            if node.name not in names or node.ctx != "load":
                raise _Unsupported
            return node.name, steps[::-1]
        else:
            return None
        node = node.node


def _lookup(name: str, steps: list[tuple[bool, Any]]) -> Evaluator:
    """One closure for a whole path (the common case: a few dict lookups)."""
    if len(steps) == 1 and steps[0][0]:
        key = steps[0][1]

        def one(ctx: Mapping[str, Any]) -> Any:
            value = ctx.get(name, UNDEFINED)
            if isinstance(value, dict):
                return value.get(key, UNDEFINED)
            raise Fallback

        return one

    def walk(ctx: Mapping[str, Any]) -> Any:
        value = ctx.get(name, UNDEFINED)
        for is_attribute, key in steps:
            if isinstance(value, dict):
                if is_attribute:
                    value = value.get(key, UNDEFINED)
                elif isinstance(key, str) and key in value:
                    value = value[key]
                else:
                    raise Fallback
            elif not is_attribute and isinstance(value, list) and isinstance(key, int):
                if not -len(value) <= key < len(value):
                    raise Fallback
                value = value[key]
            else:
                raise Fallback
        return value

    return walk


def _compile(node: nodes.Node, names: frozenset[str]) -> Evaluator:
    value = _constant(node)
    if value is not _NOT_CONSTANT:
        if isinstance(value, list):  # a fresh list each time, as Jinja makes
            return lambda ctx: list(value)
        return lambda ctx: value
    path = _path(node, names) if isinstance(node, nodes.Getattr | nodes.Getitem) else None
    if path is not None:
        return _lookup(*path)
    if isinstance(node, nodes.Const):
        value = node.value
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise _Unsupported
        return lambda ctx: value
    if isinstance(node, nodes.Name):
        if node.name not in names or node.ctx != "load":
            raise _Unsupported
        name = node.name
        return lambda ctx: ctx.get(name, UNDEFINED)
    if isinstance(node, nodes.Getattr):
        if node.attr in DICT_ATTRIBUTES or node.attr.startswith("_"):
            raise _Unsupported
        inner, attr = _compile(node.node, names), node.attr
        return lambda ctx: _attribute(_defined(inner(ctx)), attr)
    if isinstance(node, nodes.Getitem):
        if isinstance(node.arg, nodes.Slice):
            raise _Unsupported
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            if node.arg.value in DICT_ATTRIBUTES or node.arg.value.startswith("_"):
                raise _Unsupported
        inner, key = _compile(node.node, names), _compile(node.arg, names)
        return lambda ctx: _item(_defined(inner(ctx)), _defined(key(ctx)))
    if isinstance(node, nodes.Compare):
        first = _compile(node.expr, names)
        if any(o.op not in COMPARE for o in node.ops):
            raise _Unsupported
        if len(node.ops) == 1:
            op = COMPARE[node.ops[0].op]
            constant = _constant(node.ops[0].expr)
            path = _path(node.expr, names) if isinstance(node.expr, nodes.Getattr) else None
            if constant is not _NOT_CONSTANT and path and len(path[1]) == 1 and path[1][0][0]:
                # The commonest condition of all, in one closure: payload.total > 100.
                name, key = path[0], path[1][0][1]

                def attribute_against(ctx: Mapping[str, Any]) -> bool:
                    container = ctx.get(name, UNDEFINED)
                    if not isinstance(container, dict):
                        raise Fallback
                    left = container.get(key, UNDEFINED)
                    if left is UNDEFINED:
                        raise Fallback
                    return op(left, constant)

                return attribute_against
            if constant is not _NOT_CONSTANT:  # payload.total > 100, x in ['a', 'b']

                def against(ctx: Mapping[str, Any]) -> bool:
                    left = first(ctx)
                    if left is UNDEFINED:
                        raise Fallback
                    return op(left, constant)

                return against
        ops = [(COMPARE[o.op], _compile(o.expr, names)) for o in node.ops]

        def compare(ctx: Mapping[str, Any]) -> bool:
            left = _defined(first(ctx))
            for op, expr in ops:
                right = _defined(expr(ctx))
                if not op(left, right):
                    return False
                left = right
            return True

        return compare
    if isinstance(node, nodes.And):
        left, right = _compile(node.left, names), _compile(node.right, names)

        def both(ctx: Mapping[str, Any]) -> Any:
            value = _defined(left(ctx))
            return _defined(right(ctx)) if value else value

        return both
    if isinstance(node, nodes.Or):
        left, right = _compile(node.left, names), _compile(node.right, names)
        return lambda ctx: _defined(left(ctx)) or _defined(right(ctx))
    if isinstance(node, nodes.Not):
        inner = _compile(node.node, names)
        return lambda ctx: not _defined(inner(ctx))
    if isinstance(node, nodes.CondExpr):
        if node.expr2 is None:
            raise _Unsupported
        test, yes, no = (
            _compile(node.test, names),
            _compile(node.expr1, names),
            _compile(node.expr2, names),
        )
        return lambda ctx: yes(ctx) if _defined(test(ctx)) else no(ctx)
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_compile(item, names) for item in node.items]
        make = list if isinstance(node, nodes.List) else tuple
        return lambda ctx: make(_defined(item(ctx)) for item in items)
    if isinstance(node, nodes.Test):
        if node.name not in TESTS or node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise _Unsupported
        test, inner = TESTS[node.name], _compile(node.node, names)
        return lambda ctx: test(inner(ctx))
    if isinstance(node, nodes.Filter):
        if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs or node.node is None:
            raise _Unsupported
        inner = _compile(node.node, names)
        if node.name == "length":
            return lambda ctx: _length(_defined(inner(ctx)))
        if node.name in ("lower", "upper"):
            name = node.name
            return lambda ctx: _case(_defined(inner(ctx)), name)
        raise _Unsupported
    if type(node) in ARITHMETIC:
        op, left, right = (
            ARITHMETIC[type(node)],
            _compile(node.left, names),
            _compile(node.right, names),
        )
        return lambda ctx: _arithmetic(op, _defined(left(ctx)), _defined(right(ctx)))
    if isinstance(node, nodes.Neg):
        inner = _compile(node.node, names)
        return lambda ctx: -_number(_defined(inner(ctx)))
    if isinstance(node, nodes.Pos):
        inner = _compile(node.node, names)
        return lambda ctx: +_number(_defined(inner(ctx)))
    raise _Unsupported


def _number(value: Any) -> Any:
    if not _plain_number(value):
        raise Fallback
    return value


def _arithmetic(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    if not (_plain_number(left) and _plain_number(right)):
        raise Fallback
    if op in (operator.truediv, operator.floordiv, operator.mod) and right == 0:
        raise Fallback
    return op(left, right)


def _length(value: Any) -> int:
    if isinstance(value, str | list | dict | tuple):
        return len(value)
    raise Fallback


def _case(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise Fallback
    return value.lower() if name == "lower" else value.upper()


def evaluate_fast(evaluator: Evaluator, context: Mapping[str, Any]) -> Any:
    """The expression's value; raises ``Fallback`` when the sandbox must decide."""
    try:
        value = evaluator(context)
    except Fallback:
        raise
    except Exception as exc:  # a type error and the like: the sandbox says it properly
        raise Fallback from exc
    if value is UNDEFINED:
        raise Fallback
    return value
