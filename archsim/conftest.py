import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the session's end-to-end tests: the zoo models they use are trained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder: a command given no --out writes runs/<timestamp> into the working
    directory, which must not be the checkout."""
    monkeypatch.chdir(tmp_path)
