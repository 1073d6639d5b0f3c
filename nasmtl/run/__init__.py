"""A search run as a whole: its directory layout (``rundir``), start/open/resume (``lifecycle``), the
engine and final phase built from its config (``build``), and workers joining it (``worker``).

Only ``RunDir`` is imported here: the engine and the priors use it, and must not pull in the
lifecycle that sits above them.
"""

from nasmtl.run.rundir import RunDir

__all__ = ["RunDir"]
