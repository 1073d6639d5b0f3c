"""Each package's ``__all__`` names resolve, and the lazy packages stay light to import."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["arch", "spaces", "onnx", "predict", "nasbench", "priors"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_resolve(package):
    mod = importlib.import_module(f"nasmtl.{package}")
    assert len(set(mod.__all__)) == len(mod.__all__)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing


def test_lazy_packages_import_light():
    code = ("import sys, nasmtl.spaces, nasmtl.priors; "
            "print(sorted(m for m in ('lark', 'nasmtl.spaces.grammar', 'nasmtl.priors.bank') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
