"""Search spaces: the protocol and its kinds (grammar, cell, layout, quantization, joint).

Importing the package loads only the protocol (``base``); the kinds' names are imported from
their modules when first asked for, so no space pulls in another's dependencies (lark, say).
"""

from importlib import import_module
from typing import Any

from nasmtl.spaces.base import (
    SEARCH_SPACES,
    ArchitectureSpace,
    Decide,
    DecisionSpace,
    Prior,
    SearchSpace,
    SpaceError,
    design_options,
    rng_decide,
    weighted_choice,
)

_LAZY = {
    "CellDesign": "cell", "CellSpace": "cell",
    "GrammarSpace": "grammar", "load_space": "grammar", "Derivation": "grammar_walk", "load_grammar": "grammar_reader",
    "Design": "joint", "FixedArchSpace": "joint", "JointSpace": "joint", "build_network": "joint",
    "joint_from_parts": "joint", "stage_count": "joint",
    "LayoutSpace": "layout",
    "BASIC_PRECISIONS": "quant", "COMPOSITE_PRECISIONS": "quant", "DEFAULT_CALIBRATION_SAMPLES": "quant",
    "PRECISIONS": "quant", "QuantPolicy": "quant", "QuantSpace": "quant",
}

__all__ = [
    "SEARCH_SPACES", "ArchitectureSpace", "Decide", "DecisionSpace", "Prior", "SearchSpace", "SpaceError",
    "design_options", "rng_decide", "weighted_choice", *_LAZY,
]


def __getattr__(name: str) -> Any:
    """A name of ``_LAZY``, imported from its module on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    return value
