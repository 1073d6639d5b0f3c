"""Build step: a wheel carries the repository's grammars/, search_spaces/ and predictors/ as nasmtl/_data/.

Everything else is in pyproject.toml. ``nasmtl.resources`` finds the files in a source checkout
first and in the installed package otherwise.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("grammars", "search_spaces", "predictors")


class build_py_with_data(build_py):
    """``build_py`` that also copies the shipped folders into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = Path(__file__).resolve().parent
        for name in SHIPPED:
            src = here / name
            if src.is_dir():
                shutil.copytree(src, Path(self.build_lib) / "nasmtl" / "_data" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": build_py_with_data})
