"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    command = [line for line in ci_lines if line and not line.startswith("#")][-1]
    assert "pytest" in command and "ruff check" in command
    assert command in (ROOT / "README.md").read_text()


def test_readme_install_line_uses_the_ci_package_script():
    readme = (ROOT / "README.md").read_text()
    assert "sh .ci/install-debian-packages.sh && pip install torch==2.13.0 -e ." in readme
    assert "sh .ci/install-debian-packages.sh" in (ROOT / ".ci" / "run").read_text()
