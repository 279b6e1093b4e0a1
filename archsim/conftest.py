import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the session's end-to-end tests: the zoo models they use are trained once."""
    return tmp_path_factory.mktemp("cache")
