import pytest


@pytest.fixture
def report(capsys):
    """Print measured figures to the terminal even when pytest captures output."""

    def _print(text: str) -> None:
        with capsys.disabled():
            print("\n" + text)

    return _print
