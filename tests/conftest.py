"""Shared fixtures: ``--device`` and ``--dtype`` applied automatically, a seeded RNG.

Every test runs with torch's default dtype set to ``--dtype`` (float64 unless asked) and, under
``--device cuda``, with torch's default device set to the GPU, so tests build modules and tensors
without naming a device or dtype (zuko's ``tests/conftest.py`` is the model). A test that asks for
the ``device`` fixture places its tensors by hand and is left on the CPU default device. Tests
marked ``cuda`` need a GPU and are skipped without one; ``--device cuda`` on a machine without a
GPU stops with a usage error instead of skipping the whole suite.

Tolerances written for float64 go through :func:`tol`, which widens them when the suite runs in
float32; tests about a particular dtype set it explicitly instead.

Layout: the tests mirror the package in one flat folder. A test of ``madeflow/<sub>/<module>.py``
is ``test_<sub>_<module>.py`` (``test_nn_masks.py``; a topic of the subpackage may replace the
module: ``test_transforms_maf.py``, ``test_solve_gradients.py``), a test of a top-level module
or of a subpackage as a whole is ``test_<name>.py`` (``test_flows.py``, ``test_solve.py``), and
checks across the package keep a descriptive name (``test_generic.py`` runs every generic check
over the registry of ``registry.py``; ``test_numerics.py``, ``test_bad_inputs.py``, ...). Helpers
that are not test modules (``registry.py``, ``runs_helper.py``, ``dist_worker.py``) sit beside
them and are imported by name, as ``conftest`` is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pyro
import pytest
import torch

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="device on which to run the suite (cuda runs the same checks on a GPU)",
    )
    parser.addoption(
        "--dtype",
        default="float64",
        choices=tuple(DTYPES),
        help="default dtype of the suite (float64 unless asked; float32 runs the same checks)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped when there is none")
    if config.getoption("--device") == "cuda" and not torch.cuda.is_available():
        cuda = torch.version.cuda
        built = f"built with CUDA {cuda}" if cuda else "a CPU-only build"
        raise pytest.UsageError(
            f"--device cuda: torch {torch.__version__} ({built}) sees no CUDA device "
            "(torch.cuda.is_available() is False); run without --device to test on the CPU"
        )
    # Test models are tiny: one intra-op thread avoids thread start-up and barrier costs that
    # dominate them (and oversubscription when the machine is shared).
    torch.set_num_threads(int(os.environ.get("MADEFLOW_TEST_THREADS", "1")))


def pytest_report_header(config: pytest.Config) -> str:
    options = (f"--{name} {config.getoption(f'--{name}')}" for name in ("device", "dtype"))
    return "madeflow: " + " ".join(options)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch sees none")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def tol(atol64: float, atol32: float = 1e-4) -> float:
    """An absolute tolerance written for float64, widened to ``atol32`` under float32.

    Example: ``torch.allclose(t.inv(x), u, rtol=0, atol=tol(1e-10))``.
    """
    return atol64 if torch.get_default_dtype() == torch.float64 else max(atol64, atol32)


def tols(rtol64: float, atol64: float, tol32: float = 1e-4) -> dict[str, float]:
    """``rtol``/``atol`` for ``torch.testing.assert_close`` written for float64, widened to
    ``tol32`` under float32 (for values such as gradients whose scale varies).

    Example: ``torch.testing.assert_close(got, want, **tols(1e-9, 1e-12))``.
    """
    if torch.get_default_dtype() == torch.float64:
        return {"rtol": rtol64, "atol": atol64}
    return {"rtol": max(rtol64, tol32), "atol": max(atol64, tol32)}


@contextlib.contextmanager
def float64_init() -> Iterator[None]:
    """Build in float64 whatever ``--dtype``; cast to the suite's dtype afterwards.

    For tests whose outcome hangs on the random initial weights (say a ReLU unit that happens to
    be dead at every probe point): a float32 run then sees the weights of the default run,
    rounded, instead of other random draws. Tests with an explicit dtype build this way too, as
    they always have.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device chosen with ``--device``, for tests that place tensors by hand."""
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(autouse=True)
def default_dtype(request: pytest.FixtureRequest):
    """Run every test in ``--dtype`` (float64 by default) and restore the old default after.

    Per test rather than per module (zuko): a test may switch dtypes itself and must not leak it.
    """
    old = torch.get_default_dtype()
    dtype = DTYPES[request.config.getoption("--dtype")]
    torch.set_default_dtype(dtype)
    yield dtype
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def default_device(request: pytest.FixtureRequest):
    """Under ``--device cuda``, make the GPU torch's default device for the test.

    Tests that ask for the ``device`` fixture place tensors themselves (data loaders, worker
    processes, CPU-side files) and keep the CPU default. Nothing changes under ``--device cpu``.
    """
    name = request.config.getoption("--device")
    if name == "cpu" or "device" in request.fixturenames:
        yield torch.device("cpu")
        return
    old = torch.get_default_device()
    torch.set_default_device(name)
    yield torch.device(name)
    torch.set_default_device(old)


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch's global RNG before every test so each test is reproducible on its own."""
    torch.manual_seed(0)
    return 0


@pytest.fixture(autouse=True)
def pyro_param_store():
    """An empty Pyro parameter store before and after every test.

    Guides keep their parameters there by name: a guide built by one test (say the registry's
    AutoIAF over 3 latent dimensions) must not hand its ``AutoIAF.loc`` to the next one, nor to
    the doctests, which run without this folder's fixtures.
    """
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True)
def distribution_validation():
    """Restore distribution validation: the first torch.compile turns it off process-wide."""
    old = torch.distributions.Distribution._validate_args
    yield
    torch.distributions.Distribution.set_default_validate_args(old)


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run faster, and steadier on a shared machine.

    Modules that train use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
