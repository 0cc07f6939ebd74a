import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The tests here train with ``threads=1`` (fast on a busy machine, and the thread count
    of their subprocesses); give later tests the thread count they had."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
