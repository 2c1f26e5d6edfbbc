"""Issue 18, item 4: figures draw prediction against measurement. Each case is a problem a new
user found in a figure: the predicted level missing, curves that coincide, labels outside the
axes, an empty log panel and a matplotlib warning on a degenerate run, internal keys in titles,
colours too pale to read, a bound that jumps without a word."""
import json
import warnings

import numpy as np
import pytest

from figures import RESULTS, hamiltonian, persona, persona_real, pyplot, theorem2
from sims import theorem2 as sim_theorem2

# D = 1: every nonzero u is parallel to u*, so 1 - cos(u_t, u*) is 0 at every step; one
# training pair keeps it separable. Seconds, not minutes.
DIM1 = ["--unseen-tokens", "--dim", "1", "--n-train", "1", "--n-test", "10", "--n-seeds", "2", "--steps", "20",
        "--checkpoints", "5"]


def committed(name: str) -> dict:
    return json.loads((RESULTS / name / "results.json").read_text())


@pytest.fixture(scope="module")
def dim1(tmp_path_factory):
    out = tmp_path_factory.mktemp("dim1") / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sim_theorem2.main([*DIM1, "--out", str(out)]) == 0
    # the run draws its own figure: nothing from matplotlib or figures/ may leak
    leaked = [w for w in caught if "matplotlib" in w.filename or "figures" in w.filename]
    assert not leaked, [str(w.message) for w in leaked]
    return json.loads((out / "results.json").read_text())


@pytest.fixture
def captured(monkeypatch):
    """Figures a drawer makes, kept instead of saved (their artists can be inspected)."""
    figs = []
    for module in (theorem2, persona, persona_real, hamiltonian):
        monkeypatch.setattr(module, "save", lambda fig, stem: figs.append(fig))
    return figs


def test_degenerate_theorem2_draws_without_a_warning_and_writes_png_and_pdf(dim1, tmp_path):
    assert set(dim1["ex_rm_direction"]["one_minus_cosine"][1:]) == {0.0}      # the degenerate case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theorem2.draw(dim1, tmp_path / "theorem2")
    for ext in (".png", ".pdf"):
        assert (tmp_path / "theorem2").with_suffix(ext).stat().st_size > 0


def test_a_direction_panel_with_nothing_to_log_says_so(dim1, captured):
    theorem2.draw(dim1, "unused")
    texts = " ".join(t.get_text().replace("\n", " ") for t in captured[0].axes[-1].texts)
    assert "0 at every step" in texts and "nothing to draw on a log axis" in texts and "D = 1" in texts


@pytest.mark.parametrize("name, split, level", [("theorem2", "unseen_tokens", 1.0),
                                                ("theorem2_no_meaning", "unseen_tokens", 0.543),
                                                ("theorem2_ties_zero", "unseen_tokens", 1.0),
                                                ("theorem2", "train", 1.0), ("theorem2", "seen_tokens", 1.0)])
def test_every_accuracy_panel_draws_the_predicted_level(name, split, level, captured):
    results = committed(name)
    theorem2.draw(results, "unused")
    ax = captured[0].axes[list(theorem2.SPLITS).index(split)]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    predicted = [ln for ln in ax.get_lines() if ln.get_label().startswith("EX-RM predicted")]
    assert predicted and np.allclose(predicted[0].get_ydata(), level, atol=1e-3)
    assert any(t.startswith("IM-RM predicted") for t in labels)     # a level, or why there is none
    if split == "unseen_tokens":
        tie = 0.0 if name == "theorem2_ties_zero" else 0.5
        im = [ln for ln in ax.get_lines() if ln.get_label().startswith("IM-RM predicted")]
        assert np.allclose(im[0].get_ydata(), tie)


def test_coinciding_curves_are_named_and_every_label_stays_inside_its_axes(captured):
    theorem2.draw(committed("theorem2"), "unused")
    fig = captured[0]
    fig.canvas.draw()
    for ax in fig.axes:
        box = ax.get_window_extent()
        for artist in [*ax.texts, ax.get_legend()]:
            if artist is not None:
                inner = artist.get_window_extent()
                assert box.x0 - 1 <= inner.x0 and inner.x1 <= box.x1 + 1 and box.y0 - 1 <= inner.y0 \
                    and inner.y1 <= box.y1 + 1, f"{ax.get_title()}: {artist} leaves the axes"
    train = fig.axes[0].get_legend().get_title().get_text()
    assert "EX-RM and IM-RM coincide" in train                       # both at 1.0 on the training pairs
    assert fig.axes[2].get_legend().get_title().get_text() == ""     # unseen: 1.0 against 0.5


def test_persona_titles_are_words_and_colours_fit_the_data(captured):
    results = committed("persona")
    persona.draw(results, "unused")
    fig = captured[0]
    titles = [ax.get_title() for ax in fig.axes]
    assert "rho after training (IM-RM, frozen backbone)\n" in "\n".join(titles)
    assert not any("_rm/" in t or "_grm/" in t for t in titles), titles
    rho_init = [ax for ax in fig.axes if ax.get_title().startswith("rho at init")][0]
    vmin, vmax = rho_init.images[0].get_clim()
    largest = max(abs(v) for row in results["summary"]["rho_init"].values() for v in row.values())
    assert vmin == -vmax and vmax == pytest.approx(largest)           # not +-1: -0.1 must show
    # min..max over seeds as error bars, not filled areas that blend into one colour
    assert not any(c.__class__.__name__ == "PolyCollection" for ax in fig.axes for c in ax.collections)


@pytest.mark.parametrize("spec, words", [("ex/head", "EX-RM, head u only"),
                                         ("im/unembedding", "IM-RM, unembedding only (input embedding held)"),
                                         ("im/unembedding:train", "IM-RM, tied unembedding trained"),
                                         ("im/top_k:1", "IM-RM, top 1 block"), ("ex/top_k:2", "EX-RM, top 2 blocks and u"),
                                         ("ex/full", "EX-RM, full fine-tuning")])
def test_persona_real_names_models_in_words(spec, words):
    assert persona_real.model_name(spec) == words


@pytest.mark.parametrize("key, words", [("im_rm/frozen", "IM-RM, frozen backbone"),
                                        ("ex_grm/full", "EX-GRM, full fine-tuning")])
def test_persona_names_models_in_words(key, words):
    assert persona.model_name(key) == words


def test_hamiltonian_says_what_its_bound_is(captured):
    hamiltonian.draw(committed("hamiltonian"), "unused")
    ax = captured[0].axes[1]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("recomputed from each checkpoint" in t for t in labels)
    assert "beta ln 10" in " ".join(t.get_text() for t in ax.texts)


def test_pyplot_is_importable_headless():
    assert pyplot().get_backend().lower() == "agg"
