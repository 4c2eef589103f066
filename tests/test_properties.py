"""Every property of `polarref.verify`, one named test each, run on every backend.

A new backend joins by being added to conftest.BACKENDS; a new property by
being registered in polarref.verify. The count of codes that differed from
the reference inside the boundary band is printed (pytest -s shows it).
"""
import pytest

from polarref import verify


def make_test(prop):
    def test(backend):
        backend, limits, examples = backend
        result = verify.run_property(prop, backend, examples=examples, seed=0, limits=limits)
        print(f"{prop.name}[{backend.name}]: {result.status}, {result.examples} examples, "
              f"worst error/tolerance {result.worst:.3g}, band-only code differences {result.band}")
        if result.status == "n/a":
            pytest.fail(f"backend {backend.name} lacks an operation: {result.message}")
        assert result.status == "pass", "\n".join([result.message, *result.notes])
        assert result.examples > 0
    test.__name__ = f"test_{prop.name}"
    test.__doc__ = prop.doc
    return test


for _prop in verify.PROPERTIES:
    globals()[f"test_{_prop.name}"] = make_test(_prop)
