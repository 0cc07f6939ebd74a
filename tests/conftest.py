"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """``get(representation) -> TinyRun``: configs/tiny.yaml trained for its 2 steps on that
    input representation (:data:`tests.predict.REPRESENTATIONS`), each trained on first use,
    all on one synthetic data folder."""
    from tests.predict import train_checkpoint

    data_dir = tmp_path_factory.mktemp("synthetic_tiny")
    runs = {}

    def get(representation: str):
        if representation not in runs:
            run_dir = tmp_path_factory.mktemp(f"run_{representation}")
            runs[representation] = train_checkpoint(data_dir, run_dir, representation)
        return runs[representation]

    return get
