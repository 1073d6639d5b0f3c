"""Sub-commands of ``nasmtl``: each module is one command (see ``nasmtl.cli``)."""
