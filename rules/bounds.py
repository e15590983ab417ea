"""What one render or one condition may cost, and how it is counted.

Every render (and every condition evaluation) runs with a :class:`Budget` in
a context variable: a wall-clock deadline, a number of loop iterations, and a
number of characters it may produce in all (output, buffers, results of
calls, filters and operators). The sandbox (``rules.sandbox``) spends from it
at each of these points; :class:`BoundedCodeGenerator` makes Jinja's compiled
code spend at the points no sandbox hook sees: every loop iteration (whatever
is iterated: a range, a payload list, a string, a recursive loop), every
output write (also into the buffers of ``{% set %}`` blocks, macros, call and
filter blocks) and every ``~`` concatenation.

:func:`printed_size` estimates what a value costs once turned into text, without
building that text: it walks containers (and namespaces) and stops as soon as
the estimate passes the limit, so a structure whose printed form is
exponential in its memory (``ns.x = [ns.x, ns.x]``) is measured in bounded time.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

DEFAULT_MAX_OUTPUT = 256 * 1024  # characters per rendered part
DEFAULT_TIMEOUT = 1.0  # seconds per render or condition
DEFAULT_MAX_ITERATIONS = 250_000  # loop iterations per render, all loops together
# Characters produced in all (output, buffers, intermediate results), as a
# multiple of the output bound: many results each under the bound cannot add up.
BUDGET_FACTOR = 8


class TemplateLimitError(SecurityError):
    """A template went past the size, time or iteration bound."""


class Budget:
    """The bounds of one render, and what it has spent so far."""

    __slots__ = ("deadline", "iterations", "max_iterations", "max_spent", "spent")

    def __init__(self, timeout: float, max_iterations: int, max_spent: int):
        self.deadline = time.monotonic() + timeout
        self.iterations = 0
        self.max_iterations = max_iterations
        self.spent = 0
        self.max_spent = max_spent


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("budget", default=None)


def start(timeout: float, max_iterations: int, max_spent: int) -> contextvars.Token:
    return _budget.set(Budget(timeout, max_iterations, max_spent))


def stop(token: contextvars.Token) -> None:
    _budget.reset(token)


def check_deadline() -> None:
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise TemplateLimitError("stopped: the template took longer than its time limit")


def tick() -> None:
    """One loop iteration: counted, and the deadline checked."""
    budget = _budget.get()
    if budget is None:
        return
    budget.iterations += 1
    if budget.iterations > budget.max_iterations:
        raise TemplateLimitError(
            f"stopped: more than {budget.max_iterations} loop iterations in one render"
        )
    if time.monotonic() > budget.deadline:
        raise TemplateLimitError("stopped: the template took longer than its time limit")


def spend(size: int) -> None:
    """``size`` characters produced; the deadline is checked too."""
    budget = _budget.get()
    if budget is None:
        return
    budget.spent += size
    if budget.spent > budget.max_spent:
        raise TemplateLimitError(
            f"stopped: the template produced more than {budget.max_spent} characters in all"
        )
    if time.monotonic() > budget.deadline:
        raise TemplateLimitError("stopped: the template took longer than its time limit")


def bounded_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's iterable: the deadline checked for every item pulled, also for the
    items a loop filter (``{% for x in y if ... %}``) drops before the body runs.
    Iterations are counted by ``tick`` in the body, once each."""
    for item in iterable:
        check_deadline()
        yield item


def printed_size(value: Any, limit: int) -> int:
    """About how many characters ``value`` is once printed; stops counting just
    past ``limit``, so the cost is bounded by ``limit`` whatever ``value`` is."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):
            attrs = item._Namespace__attrs  # type: ignore[attr-defined]
            total += 16 + 2 * len(attrs)
            stack.extend(attrs.values())
        else:
            total += 16
        if total > limit:
            return total
    return total


# Jinja forbids new node types, so the hooks are calls of environment
# attributes, written as plain calls by the code generator below (not through
# the sandbox's ``call``, which would measure the iterable as an argument).
_HOOKS = frozenset(["bounded_iter", "tick"])


def _hook(name: str, *args: nodes.Expr, lineno: int) -> nodes.Call:
    return nodes.Call(
        nodes.EnvironmentAttribute(name, lineno=lineno), list(args), [], None, None, lineno=lineno
    )


def _is_hook(node: nodes.Call) -> bool:
    return isinstance(node.node, nodes.EnvironmentAttribute) and node.node.name in _HOOKS


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, spending from the budget where no sandbox hook
    runs: loop iterations, output writes (buffers too) and ``~``."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        hooked = isinstance(node.iter, nodes.Call) and _is_hook(node.iter)
        if not hooked:  # once per node: a tree may be compiled twice (check, then use)
            node.iter = _hook("bounded_iter", node.iter, lineno=node.lineno)
            node.body = [nodes.ExprStmt(_hook("tick", lineno=node.lineno)), *node.body]
        super().visit_For(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        if not _is_hook(node):
            super().visit_Call(node, frame, forward_caller=forward_caller)
            return
        self.write(f"environment.{node.node.name}(")  # type: ignore[attr-defined]
        for arg in node.args:
            self.visit(arg, frame)
        self.write(")")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.spend_output({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.spend_output(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.join_bounded({func_name}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


# -- estimates: refuse before allocating -------------------------------------------


def refuse_estimate(estimate: int, what: str, limit: int) -> None:
    if estimate > limit:
        raise TemplateLimitError(f"{what} would exceed the {limit}-character limit")


def check_format_spec(fmt: str, limit: int) -> None:
    if "*" in fmt and any(part.startswith("*") or "*" in part[:4] for part in fmt.split("%")[1:]):
        raise TemplateLimitError("'*' widths in %-formats are not allowed")
    digits = ""
    for char in fmt + " ":
        if char.isdigit():
            digits += char
            continue
        if digits and int(digits) > limit:
            raise TemplateLimitError(f"format width {digits} exceeds the {limit}-character limit")
        digits = ""


def percent_estimate(fmt: str, values: Any, limit: int) -> int:
    """What ``fmt % values`` may print: each conversion as big as the biggest value."""
    if isinstance(values, dict):
        items = list(values.values())
    elif isinstance(values, tuple):
        items = list(values)
    else:
        items = [values]
    biggest = max((printed_size(v, limit) for v in items), default=0)
    return len(fmt) + fmt.count("%") * biggest


def _materialise(value: Any) -> Any:
    return value if isinstance(value, (str, list, tuple, dict)) else list(value)


def _estimate_join(limit: int, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    eval_ctx, value, *rest = args
    value = _materialise(value)  # a generator is read once here, then joined
    separator = str(kwargs.get("d", rest[0] if rest else ""))
    size = printed_size(value, limit) + len(separator) * len(value)
    refuse_estimate(size, "join", limit)
    return (eval_ctx, value, *rest)


def _estimate_replace(limit: int, *args: Any, **kwargs: Any) -> None:
    text = str(args[1])
    old = str(kwargs.get("old", args[2] if len(args) > 2 else ""))
    new = str(kwargs.get("new", args[3] if len(args) > 3 else ""))
    count = (len(text) + 1) if not old else text.count(old)
    refuse_estimate(len(text) + count * len(new), "replace", limit)


def _estimate_indent(limit: int, *args: Any, **kwargs: Any) -> None:
    text = str(args[0])
    width = kwargs.get("width", args[1] if len(args) > 1 else 4)
    pad = width if isinstance(width, int) else len(str(width))
    refuse_estimate(len(text) + (text.count("\n") + 1) * pad, "indent", limit)


def _estimate_wordwrap(limit: int, *args: Any, **kwargs: Any) -> None:
    text = str(args[1])
    width = kwargs.get("width", args[2] if len(args) > 2 else 79)
    wrapstring = kwargs.get("wrapstring", args[4] if len(args) > 4 else None) or "\n"
    lines = len(text) // max(1, int(width)) + text.count(" ") + 1
    refuse_estimate(len(text) + lines * len(str(wrapstring)), "wordwrap", limit)


def _refuse_sum_of_lists(limit: int, *args: Any, **kwargs: Any) -> None:
    start = kwargs.get("start", args[3] if len(args) > 3 else 0)
    if isinstance(start, (list, tuple)):
        raise TemplateLimitError("sum() of lists is not allowed; use a loop")


# Filters whose output can be many times their input: an estimate before they run
# (each takes the limit and the filter's arguments; it may return new positional ones).
FILTER_ESTIMATES: dict[str, Callable[..., tuple[Any, ...] | None]] = {
    "sync_do_join": _estimate_join,
    "do_replace": _estimate_replace,
    "do_indent": _estimate_indent,
    "do_wordwrap": _estimate_wordwrap,
    "sync_do_sum": _refuse_sum_of_lists,
}
