"""CLI conventions that need no model."""
import pytest

from nsneurons import cli
from nsneurons.version import package_version


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nsneurons {package_version()}"
    assert package_version()[0].isdigit()
