"""Test configuration: which backends run, on what hardware, with how many examples.

Every backend runs the same property suite. Without `--gpu` the CUDA kernels
run under the numba-cuda simulator (NUMBA_ENABLE_CUDASIM=1) on small shapes;
`pytest --gpu` runs them on the real GPU with the normal shapes.

Example counts follow the Hypothesis profile in HYPOTHESIS_PROFILE:
"ci" (default: derandomized, 25 examples), "dev" (100) or "slow"
(10,000 per property, for a maintainer on demand:
`HYPOTHESIS_PROFILE=slow pytest tests/test_properties.py`).
"""
import os

import pytest

BACKENDS = ("numpy", "numba", "cuda")
SIMULATOR_EXAMPLES = 6   # the CUDA simulator runs Python threads: keep it to a few examples


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run the CUDA backend on a real GPU instead of the simulator")


def pytest_configure(config):
    if not config.getoption("--gpu"):
        # Must be set before numba.cuda is first imported (by cuda_kernels).
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from polarref import verify  # noqa: F401  (registers the Hypothesis profiles)
    from hypothesis import settings

    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    from hypothesis import settings

    mode = "real GPU" if config.getoption("--gpu") else "numba-cuda simulator"
    return f"polarref: backends {', '.join(BACKENDS)}; cuda on the {mode}; " \
           f"hypothesis profile {settings.default.max_examples} examples"


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A loaded backend with how it should be exercised: (backend, limits, examples)."""
    from hypothesis import settings
    from polarref.backends import load_backend
    from polarref.strategies import NORMAL, SMALL

    backend = load_backend(request.param)
    simulated = request.param == "cuda" and not request.config.getoption("--gpu")
    examples = min(SIMULATOR_EXAMPLES, settings.default.max_examples) if simulated else None
    return backend, (SMALL if simulated else NORMAL), examples
