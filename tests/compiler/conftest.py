import pytest

from compiler_support import make_model


@pytest.fixture(scope="session")
def model():
    """One tiny Hydra model for the whole folder; tests only read it."""
    return make_model().eval()
