"""nasmtl: neural architecture search for multi-task models."""

__version__ = "0.1.0"
