"""The Jinja2 sandbox for everything ops write in admin: conditions and templates.

Ops-written text is untrusted code. On top of Jinja2's
``ImmutableSandboxedEnvironment`` (no private attributes, no mutation of
builtins) this module bounds what a template may cost:

* static checks at save time: syntax, ``_private`` attribute access, names
  that the render context does not provide;
* a size bound: the amplifying operations (``*``, ``**``, ``%``, string
  formatting, calls and filters with huge numbers or strings) are refused
  *before* they allocate, and the streamed output is capped;
* a time bound: a deadline checked by every call, filter, ``range`` step and
  output chunk.

Why not a subprocess with resource limits: rendering is on the hot path
(1,000+ messages per second per worker) and a fork per message costs more
than the message itself.
"""

from __future__ import annotations

import contextvars
import re
import string
import time
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

DEFAULT_MAX_OUTPUT = 256 * 1024
DEFAULT_TIMEOUT = 0.5

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
# Characters produced by calls, filters and joins during one render; bounded so
# that many results each under the limit cannot add up to gigabytes.
_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("budget", default=None)
BUDGET_FACTOR = 8
_WIDTH = re.compile(r"\d+")
_STAR_WIDTH = re.compile(r"%[^a-zA-Z%]*\*")


class TemplateLimitError(SecurityError):
    """A template went past the size or time bound."""


class TemplateCheckError(TemplateError):
    """A template or condition was refused before it ever ran."""


def _spend(size: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget[0] += size
        if budget[0] > budget[1]:
            raise TemplateLimitError(
                f"stopped: the template produced more than {budget[1]} characters in all"
            )


def _size_of(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(len(v) for v in value if isinstance(v, (str, bytes, list, tuple)))
    return 0


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise TemplateLimitError("stopped: the template took longer than its time limit")


class BoundedNamespace(Namespace):
    """``namespace()`` whose attributes cannot grow past the size bound
    (a loop doubling ``ns.s = ns.s ~ ns.s`` would otherwise)."""

    max_output = DEFAULT_MAX_OUTPUT

    def __setitem__(self, name: str, value: Any) -> None:
        _check_size(value, type(self).max_output)
        _check_deadline()
        super().__setitem__(name, value)


def _check_size(value: Any, limit: int) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > limit:
        raise TemplateLimitError(f"number {value} is larger than the {limit} limit")
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > limit:
        raise TemplateLimitError(
            f"value of length {len(value)} exceeds the {limit}-character limit"
        )


def _check_format_spec(fmt: str, limit: int) -> None:
    if _STAR_WIDTH.search(fmt):
        raise TemplateLimitError("'*' widths in %-formats are not allowed")
    for width in _WIDTH.findall(fmt):
        if int(width) > limit:
            raise TemplateLimitError(f"format width {width} exceeds the {limit}-character limit")


class BoundedCodeGenerator(CodeGenerator):
    """Routes ``~`` (string concatenation) through a size check: Jinja compiles
    it to a plain join that no sandbox hook sees."""

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


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """A sandbox with size and time bounds. One per (autoescape, limits)."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = BoundedCodeGenerator

    def join_bounded(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        _check_deadline()
        total = sum(len(p) if isinstance(p, str) else 16 for p in parts)
        if total > self.max_output:
            raise TemplateLimitError(f"concatenation exceeds the {self.max_output}-character limit")
        result = join(parts)
        _spend(len(result))
        return result

    def __init__(
        self,
        *,
        autoescape: bool = False,
        max_output: int = DEFAULT_MAX_OUTPUT,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ):
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            auto_reload=False,
            **kwargs,
        )
        self.max_output = max_output
        self.timeout = timeout
        namespace_cls = type("Namespace", (BoundedNamespace,), {"max_output": max_output})
        self.globals = {
            "range": self._bounded_range,
            "dict": dict,
            "namespace": namespace_cls,
        }
        self.filters = {name: self._bounded_filter(func) for name, func in self.filters.items()}
        self.filters["format"] = self._bounded_filter(self._safe_format)

    # -- size bounds --------------------------------------------------------------

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        limit = self.max_output
        if operator == "**":
            if isinstance(right, int) and not isinstance(right, bool):
                if abs(right) > 1000 or (
                    isinstance(left, int) and abs(left).bit_length() * abs(right) > 4096
                ):
                    raise TemplateLimitError(f"power {left!r} ** {right!r} is too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    if max(len(seq), _size_of(seq)) * count > limit:
                        raise TemplateLimitError(
                            f"repeating a value {count} times exceeds the {limit}-character limit"
                        )
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > 4096:
                    raise TemplateLimitError("product is too large")
        elif operator == "%" and isinstance(left, str):
            _check_format_spec(left, limit)
        elif operator == "+" and isinstance(left, (str, list, tuple)):
            if isinstance(right, (str, list, tuple)) and len(left) + len(right) > limit:
                raise TemplateLimitError(f"concatenation exceeds the {limit}-character limit")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        for value in (*args, *kwargs.values()):
            _check_size(value, __self.max_output)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(result, __self.max_output)
        _spend(_size_of(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, limit = value.__self__, self.max_output
        for _, _, spec, _ in string.Formatter().parse(fmt):
            if spec and "{" in spec:
                raise TemplateLimitError(
                    "nested replacement fields in format specs are not allowed"
                )
            if spec:
                _check_format_spec(spec, limit)
        return wrapped

    def _bounded_filter(self, func: Callable[..., Any]) -> Callable[..., Any]:
        limit = self.max_output

        def bounded(*args: Any, **kwargs: Any) -> Any:
            _check_deadline()
            for value in (*args, *kwargs.values()):
                if isinstance(value, int) and not isinstance(value, bool):
                    _check_size(value, limit)
            if func.__name__ == "sync_do_sum" and isinstance(
                kwargs.get("start", args[3] if len(args) > 3 else 0), (list, tuple)
            ):
                raise TemplateLimitError("sum() of lists is not allowed; use a loop")
            if (
                func.__name__ == "sync_do_join"
                and len(args) >= 2
                and isinstance(args[1], (list, tuple))
            ):
                if _size_of(args[1]) > limit:
                    raise TemplateLimitError(f"join would exceed the {limit}-character limit")
            if func.__name__ == "do_replace" and len(args) >= 4:
                _, subject, old, new = args[:4]
                estimate = len(str(subject)) * max(1, len(str(new))) // max(1, len(str(old)))
                if estimate > limit:
                    raise TemplateLimitError(f"replace would exceed the {limit}-character limit")
            result = func(*args, **kwargs)
            if isinstance(result, str):
                _check_size(result, limit)
                _spend(len(result))
            return result

        # Keep Jinja's pass_context/pass_environment markers.
        for marker in ("jinja_pass_arg",):
            if hasattr(func, marker):
                setattr(bounded, marker, getattr(func, marker))
        bounded.__name__ = func.__name__
        return bounded

    @staticmethod
    def _safe_format(value: str, *args: Any, **kwargs: Any) -> str:
        _check_format_spec(str(value), DEFAULT_MAX_OUTPUT)
        if args and kwargs:
            raise TemplateLimitError("format takes positional or keyword arguments, not both")
        return str(value) % (kwargs or args)

    @staticmethod
    def _bounded_range(*args: int) -> Iterable[int]:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise TemplateLimitError(f"range of {len(numbers)} items exceeds the {MAX_RANGE} limit")
        for index, number in enumerate(numbers):
            if index % 256 == 0:
                _check_deadline()
            yield number

    # -- checks at save time -------------------------------------------------

    def check_source(
        self, source: str, allowed_names: Iterable[str] | None = None
    ) -> nodes.Template:
        """Parse and statically check ``source``; raise ``TemplateCheckError``."""
        try:
            tree = self.parse(source)
            # Compiling too: deep nesting can pass the parser and fail here.
            self.compile(tree)
        except TemplateSyntaxError as exc:
            raise TemplateCheckError(f"syntax error on line {exc.lineno}: {exc.message}") from exc
        except RecursionError as exc:
            raise TemplateCheckError("the template is nested too deeply") from exc
        check_tree(tree)
        if allowed_names is not None:
            known = set(allowed_names) | set(self.globals)
            unknown = sorted(meta.find_undeclared_variables(tree) - known)
            if unknown:
                raise TemplateCheckError(
                    f"unknown name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                    f"available: {', '.join(sorted(known))}"
                )
        return tree

    # -- rendering -----------------------------------------------------------------

    def render_bounded(self, template: Any, context: dict[str, Any]) -> str:
        """Render with the deadline and the output cap in force."""
        token = _deadline.set(time.monotonic() + self.timeout)
        budget = _budget.set([0, self.max_output * BUDGET_FACTOR])
        try:
            size = 0
            parts: list[str] = []
            for chunk in template.generate(context):
                size += len(chunk)
                if size > self.max_output:
                    raise TemplateLimitError(
                        f"output exceeds the {self.max_output}-character limit"
                    )
                parts.append(chunk)
                _check_deadline()
            return "".join(parts)
        except RecursionError as exc:
            raise TemplateLimitError("stopped: the template recursed too deeply") from exc
        finally:
            _deadline.reset(token)
            _budget.reset(budget)

    def evaluate_bounded(self, expression: Callable[..., Any], context: dict[str, Any]) -> Any:
        token = _deadline.set(time.monotonic() + self.timeout)
        budget = _budget.set([0, self.max_output * BUDGET_FACTOR])
        try:
            return expression(**context)
        except RecursionError as exc:
            raise TemplateLimitError("stopped: the expression recursed too deeply") from exc
        finally:
            _deadline.reset(token)
            _budget.reset(budget)


def check_tree(tree: nodes.Node) -> None:
    """Refuse access to private and dunder attributes anywhere in the tree,
    including branches a sample render would not reach."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            name = node.arg.value
        if name is not None and name.startswith("_"):
            raise TemplateCheckError(
                f"line {node.lineno}: access to '{name}' is not allowed (private attribute)"
            )
