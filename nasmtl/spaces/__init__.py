"""Search spaces: the protocol and its kinds (grammar, cell, layout, quantization, joint)."""

from nasmtl.spaces.base import (
    ArchitectureSpace,
    Decide,
    DecisionSpace,
    Prior,
    SearchSpace,
    SpaceError,
    rng_decide,
    weighted_choice,
)

__all__ = [
    "ArchitectureSpace", "Decide", "DecisionSpace", "Prior", "SearchSpace", "SpaceError",
    "rng_decide", "weighted_choice",
]
