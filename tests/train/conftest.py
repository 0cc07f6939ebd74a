import pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A folder for the tiny config's synthetic data, made on first use by the trainer."""
    return tmp_path_factory.mktemp("synthetic_tiny")
