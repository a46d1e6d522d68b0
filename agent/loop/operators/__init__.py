"""The mutation operators, one module each; importing the package registers them all."""

import importlib
import pkgutil

from agent.loop.operators.registry import (
    Child,
    OperatorSpec,
    choose_operator,
    get_operator,
    register_operator,
    registered,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Child",
    "OperatorSpec",
    "choose_operator",
    "get_operator",
    "register_operator",
    "registered",
]
