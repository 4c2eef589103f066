"""The README's commands are the ones CI runs, and its usage example runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks():
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = bash_blocks()[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_usage_example_runs():
    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]
    exec(compile(code, "README usage", "exec"), {})
