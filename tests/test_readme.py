"""The README's Quickstart is what CI runs, and what a new user meets works as described."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_exactly_two_commands():
    cmds = quickstart_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("python -m sims.theorem2 --unseen-tokens")
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    assert quickstart_commands()[1] in (ROOT / ".ci/run").read_text().splitlines()


def test_readme_shows_the_figure_that_figures_rebuilds():
    assert "figures/theorem2.png" in (ROOT / "README.md").read_text()
    assert (ROOT / "figures/theorem2.png").exists()
