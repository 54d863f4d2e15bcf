"""Shared fixtures: ``--device``, float64 by default, a seeded RNG."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="device on which to run the suite (cuda runs the same checks on a GPU)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped when there is none")
    # Test models are tiny: one intra-op thread avoids thread start-up and barrier costs that
    # dominate them (and oversubscription when the machine is shared).
    torch.set_num_threads(int(os.environ.get("MADEFLOW_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wants_cuda = config.getoption("--device") == "cuda"
    if torch.cuda.is_available():
        return
    reason = "no CUDA device available"
    for item in items:
        if wants_cuda or "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device chosen with ``--device``."""
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch's global RNG before every test so each test is reproducible on its own."""
    torch.manual_seed(0)
    return 0


@pytest.fixture(autouse=True)
def float64_default():
    """Exactness tests run in float64 unless they ask for something else."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)


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
