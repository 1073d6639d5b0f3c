"""Search spaces: the protocol and its kinds (grammar, cell, layout, quantization, joint)."""

from nasmtl.spaces.base import ArchitectureSpace, Prior, SearchSpace, SpaceError, weighted_choice

__all__ = ["ArchitectureSpace", "Prior", "SearchSpace", "SpaceError", "weighted_choice"]
