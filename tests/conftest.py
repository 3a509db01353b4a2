"""Session-wide test settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op torch thread for every test: the test models are tiny and gain nothing from
    more, and several threads stall badly when tests share the cores with other work."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
