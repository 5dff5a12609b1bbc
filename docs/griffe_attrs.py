"""Griffe extension: an attrs class documents the ``__init__`` attrs writes for it.

Griffe reads source, and an ``@define`` class has no ``__init__`` in its source, so the
reference would show ``Limits`` without its arguments, and each field's value as the
``field(default=100, validator=...)`` call that declares it. This extension reads the
fields in source order, as attrs does, and gives the class the ``__init__`` attrs
generates (annotations and defaults), and each field its default as its value, so the
reference shows every knob with its default straight from the code.
"""

from __future__ import annotations

import ast
from typing import Any

import griffe

_ATTRS_CLASS_DECORATORS = frozenset(
    f"{module}.{name}"
    for module in ("attrs", "attr")
    for name in ("define", "frozen", "mutable", "s", "attrs")
)
_FIELD_CALLS = frozenset({"attrs.field", "attr.field", "attr.ib", "attr.attrib"})
_LITERAL_FACTORIES = {"dict": "{}", "list": "[]", "set": "set()", "tuple": "()"}


def _keyword(call: griffe.ExprCall, name: str) -> Any:
    """The value of keyword argument `name` in `call`, or None."""
    for argument in call.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == name:
            return argument.value
    return None


def _is_call_to(value: object, paths: frozenset[str]) -> bool:
    if not isinstance(value, griffe.ExprCall):
        return False
    try:
        return value.function.canonical_path in paths
    except AttributeError:  # a call of something griffe cannot name
        return False


def _factory_default(factory: object) -> str:
    """How a field built by `factory()` reads as a default: ``{}`` for ``dict``."""
    return _LITERAL_FACTORIES.get(str(factory), f"{factory}()")


def _default(value: object) -> tuple[bool, object]:
    """(has a default, the default as source) of one field declaration's value."""
    if not _is_call_to(value, _FIELD_CALLS):
        return value is not None, value
    assert isinstance(value, griffe.ExprCall)
    if (factory := _keyword(value, "factory")) is not None:
        return True, _factory_default(factory)
    default = _keyword(value, "default")
    if _is_call_to(default, frozenset({"attrs.Factory", "attr.Factory"})):
        assert isinstance(default, griffe.ExprCall)
        return True, _factory_default(default.arguments[0])
    return default is not None, default


def _is_field(member: griffe.Object | griffe.Alias) -> bool:
    if not isinstance(member, griffe.Attribute) or member.annotation is None:
        return False
    return not str(member.annotation).startswith(("ClassVar", "typing.ClassVar"))


def _kw_only(call: object) -> bool:
    return isinstance(call, griffe.ExprCall) and str(_keyword(call, "kw_only")) == "True"


class AttrsInit(griffe.Extension):
    """Give each attrs class its generated ``__init__`` and each field its default."""

    def on_class_members(
        self, *, node: ast.AST | griffe.ObjectNode, cls: griffe.Class, **kwargs: Any
    ) -> None:
        """Rewrite `cls`'s fields and add its ``__init__``, if attrs decorates it."""
        decorators = [d.value for d in cls.decorators if d.callable_path in _ATTRS_CLASS_DECORATORS]
        if not decorators or "__init__" in cls.members:
            return
        class_kw_only = _kw_only(decorators[0])
        parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
        for name, member in list(cls.members.items()):
            if not _is_field(member):
                continue
            assert isinstance(member, griffe.Attribute)
            declared = member.value
            if _is_call_to(declared, _FIELD_CALLS) and str(_keyword(declared, "init")) == "False":
                continue
            has_default, default = _default(declared)
            member.value = default if has_default else None
            member.labels.discard("class-attribute")  # attrs keeps fields on instances only
            kind = (
                griffe.ParameterKind.keyword_only
                if class_kw_only or _kw_only(declared)
                else griffe.ParameterKind.positional_or_keyword
            )
            parameters.append(
                griffe.Parameter(
                    name.lstrip("_"),  # attrs strips a private field's underscore
                    annotation=member.annotation,
                    kind=kind,
                    default=default if has_default else None,
                )
            )
        init = griffe.Function(
            "__init__",
            parameters=griffe.Parameters(*parameters),
            returns="None",
            lineno=cls.lineno,
            endlineno=cls.lineno,
        )
        cls.set_member("__init__", init)
