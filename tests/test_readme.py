"""What a new user meets: the README's Quickstart is what CI runs, every command the README, the
ledger and the docs/ pages show exists and parses, the example representations file works as
described, and every link between the pages lands on a file and a heading that exist."""
import importlib
import json
import re
from pathlib import Path

import pytest

from sims import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


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
    text = "".join(p.read_text() for p in [ROOT / "README.md", ROOT / "paper_checks.md", *DOCS])
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
    if "reps.npz" in flags:   # files are validated with the flags: write the documented example
        exec(compile(_example(), "docs/representations.md example", "exec"), {})
    cli.parse(config_cls, mod.__doc__, [*flags.split(), "--out", str(tmp_path / "x")])


def _example() -> str:
    return re.search(r"```python\n(.*?)```", (ROOT / "docs/representations.md").read_text(), re.S).group(1)


def test_every_figure_that_figures_rebuilds_is_shown():
    from figures.__main__ import DRAWN
    shown = {(page.parent / t).resolve() for page in PAGES for t in links(page) if t.endswith(".png")}
    for name in DRAWN:
        assert (ROOT / f"figures/{name}.png") in shown and (ROOT / f"figures/{name}.png").exists(), name


def test_example_representations_file_runs(tmp_path, monkeypatch):
    """The ten-line example writes a file that sims.theorem2 takes, evaluated on all its splits."""
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), "docs/representations.md example", "exec"), {})
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


# Links: every relative link of the README, the ledger and docs/ names a file that exists, and an
# anchor names a heading of that file, by GitHub's rule (github-slugger): the heading's text,
# lower-cased, with punctuation other than '-' and '_' removed and each space made a '-'; a
# repeated heading gets -1, -2, ... Brackets inside code are not links.
PAGES = [ROOT / "README.md", ROOT / "paper_checks.md", *DOCS]
FENCED = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    text = re.sub(r"<!--.*?-->", "", heading)                     # markers render as their value only
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)        # a link shows its text
    return re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCED.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6} +(.*?)(?: +#+)? *$", line):
            s = slug(m[1])
            seen[s] = seen.get(s, -1) + 1
            out.add(s if seen[s] == 0 else f"{s}-{seen[s]}")
    return out


def links(page: Path) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", FENCED.sub("", page.read_text()))
    return LINK.findall(prose)


def test_the_readme_is_a_first_screen_and_a_map():
    """A newcomer meets what the toolkit shows, the Quickstart and the contents first; every
    docs/ page is one link away, and the long sections stay on their pages."""
    head = README.split("\n## What each part shows", 1)[0]
    assert "## Quickstart" in head and "## Contents" in head and len(head.splitlines()) <= 60
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    assert not [p.name for p in DOCS if p not in linked], "link every docs/ page from the README"
    assert len(README.splitlines()) <= 150, "move the new section to a page under docs/"


def test_slugs_follow_github():
    assert slug("Theorem 2 on a real model's hidden states") == "theorem-2-on-a-real-models-hidden-states"
    assert slug("`u*` against the fastest peers") == "u-against-the-fastest-peers"
    assert slug("Learning dynamics (Section 4, Eq. 5)") == "learning-dynamics-section-4-eq-5"
    assert slug("Running things: results, exit codes, conventions") == "running-things-results-exit-codes-conventions"
    assert slug("Section 4–5.1, `hf_step`") == "section-451-hf_step"


def test_every_link_in_the_documents_resolves():
    problems = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"[a-z]+:", target):          # https:, mailto: leave the repository by design
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not path.is_relative_to(ROOT):
                problems.append(f"{where} points outside the repository")
            elif not path.exists():
                problems.append(f"{where}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                problems.append(f"{where}: {path.name} has no heading with that anchor")
    assert not problems, "\n".join(problems)
    assert sum(len(links(p)) for p in PAGES) > len(PAGES)     # the parser found the links
