"""The Jinja2 sandbox for everything ops write in admin: conditions and templates.

Ops-written text is untrusted code. On top of Jinja2's
``ImmutableSandboxedEnvironment`` (no private attributes, no mutation of
builtins) this module bounds what any template or condition may cost, at
save-time validation and in the worker alike (both call ``render_bounded`` /
``evaluate_bounded``):

* static checks at save time: syntax, ``_private`` attribute access, names
  that the render context does not provide;
* **time**: a wall-clock deadline per render and per condition (default 1 s;
  ``NOTIFY["RENDER_TIMEOUT"]``), checked at every loop iteration, call, filter,
  operator, concatenation and output write;
* **work**: a loop-iteration budget per render, counted whatever is iterated;
* **size**: output capped per part (default 256 KB; ``RENDER_MAX_OUTPUT``), and
  a budget of characters produced in all, buffers and intermediate results
  included; the amplifying operations (``*``, ``**``, ``%``, ``~``,
  ``format``, ``join``, ``replace``, ``indent``, ``wordwrap``, printing a
  container...) are estimated and refused *before* they allocate.

The counting lives in ``rules.bounds``: a code generator that makes the compiled
template spend at each loop iteration and output write (points no sandbox hook
sees), and this environment's ``call``, ``call_binop`` (``intercepted_binops``)
and filter wrappers for the rest.

Why counting in-process rather than a render subprocess with resource
limits: rendering is on the hot path (1,000+ messages per second per worker)
and a fork or an IPC round trip per message costs more than the message. A
wall-clock deadline (rather than CPU time) also bounds how long a bomb can
hold a worker thread, which is what other deliveries wait on; a thread's
wall time is never less than its CPU time, so the CPU bound holds too.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from . import bounds
from .bounds import (
    BUDGET_FACTOR,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_TIMEOUT,
    FILTER_ESTIMATES,
    BoundedCodeGenerator,
    TemplateLimitError,
    check_deadline,
    check_format_spec,
    percent_estimate,
    printed_size,
    refuse_estimate,
    spend,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_TIMEOUT",
    "BoundedSandbox",
    "TemplateCheckError",
    "TemplateLimitError",
    "check_tree",
]

# String methods whose output can be many times their input, with no useful
# place in a message template.
_REFUSED_STR_METHODS = frozenset(["translate", "maketrans", "expandtabs"])


class TemplateCheckError(TemplateError):
    """A template or condition was refused before it ever ran."""


class BoundedNamespace(Namespace):
    """``namespace()`` whose attributes cannot grow past the size bound
    (a loop doubling ``ns.s = ns.s ~ ns.s`` or ``ns.x = [ns.x, ns.x]`` would)."""

    max_output = DEFAULT_MAX_OUTPUT

    def __setitem__(self, name: str, value: Any) -> None:
        _check_size(value, type(self).max_output)
        check_deadline()
        super().__setitem__(name, value)


def _check_size(value: Any, limit: int) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > limit:
        raise TemplateLimitError(f"number {value} is larger than the {limit} limit")
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset, Namespace)):
        size = len(value) if isinstance(value, (str, bytes)) else printed_size(value, limit)
        if size > limit:
            raise TemplateLimitError(f"a value of {size}+ characters exceeds the {limit} limit")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """A sandbox with time, iteration and size bounds. One per (autoescape, limits)."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = BoundedCodeGenerator

    def __init__(
        self,
        *,
        autoescape: bool = False,
        max_output: int = DEFAULT_MAX_OUTPUT,
        timeout: float = DEFAULT_TIMEOUT,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        **kwargs: Any,
    ):
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            auto_reload=False,
            finalize=self._finalize,
            **kwargs,
        )
        self.max_output = max_output
        self.timeout = timeout
        self.max_iterations = max_iterations
        namespace_cls = type("Namespace", (BoundedNamespace,), {"max_output": max_output})
        self.globals = {
            "range": self._bounded_range,
            "dict": dict,
            "namespace": namespace_cls,
        }
        self.filters = {name: self._bounded_filter(func) for name, func in self.filters.items()}
        self.filters["format"] = self._bounded_filter(self._safe_format)

    # -- hooks the compiled code calls (rules.bounds.BoundedCodeGenerator) ----------

    tick = staticmethod(bounds.tick)
    bounded_iter = staticmethod(bounds.bounded_iter)

    @staticmethod
    def spend_output(text: str) -> str:
        spend(len(text))
        return text

    def join_bounded(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        limit = self.max_output
        total = sum(len(p) if isinstance(p, str) else printed_size(p, limit) for p in parts)
        refuse_estimate(total, "concatenation", limit)
        result = join(parts)
        spend(len(result))
        return result

    def _finalize(self, value: Any) -> Any:
        """Every ``{{ value }}`` printed: a container is measured before ``str()``."""
        if not isinstance(value, (str, int, float)):
            refuse_estimate(printed_size(value, self.max_output), "printing", self.max_output)
        return value

    # -- size bounds --------------------------------------------------------------

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, (str, bytes)) and attr in _REFUSED_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_deadline()
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
                    size = len(seq) if isinstance(seq, str) else printed_size(seq, limit)
                    refuse_estimate(size * count, f"repeating a value {count} times", limit)
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > 4096:
                    raise TemplateLimitError("product is too large")
        elif operator == "%" and isinstance(left, str):
            check_format_spec(left, limit)
            refuse_estimate(percent_estimate(left, right, limit), "formatting", limit)
        elif operator == "+" and isinstance(left, (str, list, tuple)):
            if isinstance(right, (str, list, tuple)):
                size = printed_size(left, limit) + printed_size(right, limit)
                refuse_estimate(size, "concatenation", limit)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, (str, list, tuple)):
            spend(len(result))
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        check_deadline()
        limit = __self.max_output
        for value in (*args, *kwargs.values()):
            _check_size(value, limit)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            __self._estimate_str_method(owner, getattr(__obj, "__name__", ""), args)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(result, limit)
        if isinstance(result, (str, list, tuple)):
            spend(len(result))
        return result

    def _estimate_str_method(self, text: str, name: str, args: tuple[Any, ...]) -> None:
        limit = self.max_output
        if name == "replace" and len(args) >= 2:
            old, new = str(args[0]), str(args[1])
            count = (len(text) + 1) if not old else text.count(old)
            refuse_estimate(len(text) + count * len(new), "replace", limit)
        elif name == "join" and args:
            parts = args[0]
            if isinstance(parts, (str, list, tuple)):
                size = printed_size(parts, limit) + len(text) * len(parts)
                refuse_estimate(size, "join", limit)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, limit = value.__self__, self.max_output
        fields = 0
        for _, field, spec, _ in string.Formatter().parse(fmt):
            if spec and "{" in spec:
                raise TemplateLimitError(
                    "nested replacement fields in format specs are not allowed"
                )
            if spec:
                check_format_spec(spec, limit)
            fields += field is not None

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            values = [*args, *kwargs.values()]
            if len(args) == 1 and isinstance(args[0], dict) and not kwargs:  # format_map
                values = list(args[0].values())
            biggest = max((printed_size(v, limit) for v in values), default=0)
            refuse_estimate(len(fmt) + fields * biggest, "format", limit)
            result = wrapped(*args, **kwargs)
            spend(len(result))
            return result

        return bounded_format

    def _bounded_filter(self, func: Callable[..., Any]) -> Callable[..., Any]:
        limit = self.max_output
        estimate = FILTER_ESTIMATES.get(func.__name__)

        def bounded(*args: Any, **kwargs: Any) -> Any:
            check_deadline()
            for value in (*args, *kwargs.values()):
                if isinstance(value, (int, list, tuple, dict, Namespace)):
                    _check_size(value, limit)
            if estimate is not None:
                args = estimate(limit, *args, **kwargs) or args
            result = func(*args, **kwargs)
            if isinstance(result, (str, list, tuple, dict)):
                _check_size(result, limit)
                spend(len(result))
            return result

        # Keep Jinja's pass_context/pass_environment markers.
        for marker in ("jinja_pass_arg",):
            if hasattr(func, marker):
                setattr(bounded, marker, getattr(func, marker))
        bounded.__name__ = func.__name__
        return bounded

    @staticmethod
    def _safe_format(value: str, *args: Any, **kwargs: Any) -> str:
        fmt = str(value)
        check_format_spec(fmt, DEFAULT_MAX_OUTPUT)
        if args and kwargs:
            raise TemplateLimitError("format takes positional or keyword arguments, not both")
        values = kwargs or args
        refuse_estimate(
            percent_estimate(fmt, values, DEFAULT_MAX_OUTPUT), "format", DEFAULT_MAX_OUTPUT
        )
        return fmt % values

    @staticmethod
    def _bounded_range(*args: int) -> Iterable[int]:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise TemplateLimitError(f"range of {len(numbers)} items exceeds the {MAX_RANGE} limit")
        for index, number in enumerate(numbers):
            if index % 256 == 0:
                check_deadline()
            yield number

    # -- checks at save time -------------------------------------------------

    def check_source(
        self, source: str, allowed_names: Iterable[str] | None = None
    ) -> nodes.Template:
        """Parse and statically check ``source``; raise ``TemplateCheckError``."""
        try:
            tree = self.parse(source)
            # Compiling too: deep nesting can pass the parser and fail here.
            self.compile(self.parse(source))
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

    def _start(self) -> Any:
        return bounds.start(self.timeout, self.max_iterations, self.max_output * BUDGET_FACTOR)

    def render_bounded(self, template: Any, context: dict[str, Any]) -> str:
        """Render with the deadline, the iteration budget and the output cap in force."""
        token = self._start()
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
            return "".join(parts)
        except RecursionError as exc:
            raise TemplateLimitError("stopped: the template recursed too deeply") from exc
        finally:
            bounds.stop(token)

    def evaluate_bounded(self, expression: Callable[..., Any], context: dict[str, Any]) -> Any:
        token = self._start()
        try:
            return expression(**context)
        except RecursionError as exc:
            raise TemplateLimitError("stopped: the expression recursed too deeply") from exc
        finally:
            bounds.stop(token)


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
