import pytest


@pytest.fixture
def report(capsys):
    """Print measured figures to the terminal even when pytest captures output."""

    def _print(text: str) -> None:
        with capsys.disabled():
            print("\n" + text)

    return _print


@pytest.fixture(scope="module")
def one_thread():
    """Two shared cores: keep a module of small torch tests on one of them (use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
