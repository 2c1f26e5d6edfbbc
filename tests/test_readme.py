"""What a new user meets: the README's Quickstart is what CI runs, every command the README
and the ledger show exists and parses, and the README's example file works as described."""
import importlib
import json
import re
from pathlib import Path

import pytest

from sims import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quickstart_commands():
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_exactly_two_commands():
    cmds = quickstart_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("python -m sims.theorem2 --unseen-tokens") and "pip install" in cmds[0]
    assert "pytest" in cmds[1] and '".[test]"' in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    assert quickstart_commands()[1] in (ROOT / ".ci/run").read_text().splitlines()


def shown_commands():
    text = README + (ROOT / "paper_checks.md").read_text()
    return sorted(set(re.findall(r"python -m (sims\.\w+)((?: --[\w-]+(?: (?!--)[^\s`;)]+)?)*)", text)))


@pytest.mark.parametrize("module,flags", shown_commands())
def test_every_command_shown_exists_and_its_flags_parse(module, flags, tmp_path, monkeypatch):
    mod = importlib.import_module(module)
    config_cls = getattr(mod, "Config", None) or getattr(mod, "BenchConfig", None)
    if config_cls is None:
        pytest.skip(f"{module} has its own parser")
    monkeypatch.chdir(tmp_path)
    # the flags parse on any machine: a command sized for a large one (bench_eq5 --sizes llama3,
    # ~15 GiB) is not refused for this one's free memory
    monkeypatch.setattr("sims.inputs.available_bytes", lambda device="cpu": 2**63 - 1)
    if "reps.npz" in flags:   # files are validated with the flags: write the README's example
        exec(compile(_example(), "README example", "exec"), {})
    cli.parse(config_cls, mod.__doc__, [*flags.split(), "--out", str(tmp_path / "x")])


def _example() -> str:
    return re.search(r"```python\n(.*?)```", README.split("### Your own representations", 1)[1], re.S).group(1)


def test_readme_shows_every_figure_that_figures_rebuilds():
    from figures.__main__ import DRAWN
    for name in DRAWN:
        assert f"figures/{name}.png" in README and (ROOT / f"figures/{name}.png").exists()


def test_readme_example_file_runs(tmp_path, monkeypatch):
    """The ten-line example writes a file that sims.theorem2 takes, evaluated on all its splits."""
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), "README example", "exec"), {})
    from sims import theorem2
    assert theorem2.main(["--representations", "reps.npz", "--unseen-tokens", "--out", "o"]) == 0
    r = json.loads((tmp_path / "o/results.json").read_text())
    assert r["sizes"]["dim"] == 16 and r["sizes"]["pairs"] == {"train": 40, "seen_tokens": 20, "unseen_tokens": 20}
    assert r["models"]["im_rm"]["unseen_tokens"]["tie_fraction"] == 1.0


def test_python_m_sims_lists_the_commands(capsys):
    from sims.__main__ import main
    assert main() == 0
    out = capsys.readouterr().out
    for name in ("sims.theorem2", "sims.hf", "sims.bench_max_margin_real", "sims.persona"):
        assert f"  {name} " in out
    assert "sims.cli " not in out and "sims.training " not in out   # libraries, not commands
