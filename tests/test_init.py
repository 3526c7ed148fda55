"""The package surface: what ``import jaxbp`` gives, and what it does not import."""

import subprocess
import sys

import pytest

import jaxbp


def test_all_names_exist():
    for name in jaxbp.__all__:
        assert getattr(jaxbp, name) is not None, name


def test_subpackages_are_attributes_after_a_plain_import():
    """In a fresh interpreter: ``import jaxbp`` then ``jaxbp.<name>`` for every subpackage."""
    code = (
        "import jaxbp\n"
        "for name in sorted(jaxbp.SUBMODULES):\n"
        "    assert getattr(jaxbp, name).__name__ == 'jaxbp.' + name, name\n"
        "    assert name in dir(jaxbp), name\n"
        "print('ok', jaxbp.verify.check.__name__, jaxbp.data.load_dataset.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok check load_dataset"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'backprop_v2'"):
        jaxbp.backprop_v2  # noqa: B018


def test_importing_the_core_imports_neither_sklearn_nor_matplotlib():
    code = (
        "import sys, jaxbp; print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
