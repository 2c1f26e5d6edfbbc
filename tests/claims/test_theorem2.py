"""Theorem 2 as properties: drawn sizes, structures, step sizes and step counts."""
import numpy as np
from hypothesis import assume, given, strategies as st

from tests.helpers import convert
from sims.representations import synthetic
from sims.training import train_ex_rm, train_im_rm
from theory.backend import to_numpy
from theory.gradients import token_difference
from theory.max_margin import NotSeparableError, max_margin
from theory.rewards import accuracy, im_rm_reward

structures = dict(
    dim=st.integers(2, 24), half_seen=st.integers(1, 5), half_unseen=st.integers(1, 4),
    extra=st.integers(0, 3), n_train=st.integers(1, 40), seed=st.integers(0, 2**16),
    meaning=st.floats(0.0, 3.0), token_noise=st.floats(0.0, 2.0), pair_noise=st.floats(0.0, 1.0),
    similarity=st.floats(0.0, 0.95))


def draw(dim, half_seen, half_unseen, extra, n_train, seed, meaning, token_noise, pair_noise, similarity):
    return synthetic(seeds=[seed, seed + 1], dim=dim, vocab_size=2 * (half_seen + half_unseen + extra),
                     n_seen=2 * half_seen, n_unseen=2 * half_unseen, n_train=n_train, n_test=17,
                     meaning_strength=meaning, token_noise=token_noise, pair_noise=pair_noise,
                     prompt_similarity=similarity, init_scale=1.0)


@given(**structures, backend=st.sampled_from(["numpy", "torch-cpu"]), lr=st.floats(1e-3, 10.0),
       steps=st.integers(1, 60), rule=st.sampled_from(["constant", "normalized"]),
       beta=st.floats(0.01, 2.0))
def test_im_rm_unseen_margins_never_move(backend, lr, steps, rule, beta, **s):
    p = draw(**s)
    tr, un = p.splits["train"], p.splits["unseen_tokens"]
    U_ref, hx = convert(backend, p.U_ref), convert(backend, tr.h_x)
    E = token_difference(convert(backend, tr.y_plus), convert(backend, tr.y_minus), p.vocab_size, hx)
    seen_margins = []

    def on_checkpoint(t, U):
        h = convert(backend, un.h_x)[..., None, :]
        rp, sp = im_rm_reward(U, h, convert(backend, un.y_plus)[..., None], beta=beta, U_ref=U_ref, with_scale=True)
        rm, sm = im_rm_reward(U, h, convert(backend, un.y_minus)[..., None], beta=beta, U_ref=U_ref, with_scale=True)
        acc, ties = accuracy(rp - rm, sp + sm)
        seen_margins.append((to_numpy(acc), to_numpy(ties)))

    U = train_im_rm(U_ref, hx, E, beta=beta, lr=lr, steps=steps, rule=rule,
                    checkpoints=range(1, steps + 1), on_checkpoint=on_checkpoint)
    unseen = np.setdiff1d(np.arange(p.vocab_size), p.seen_tokens)
    # the rows of unseen tokens are bit-identical to the reference: their gradient is exactly 0
    assert np.array_equal(to_numpy(U)[:, unseen], p.U_ref[:, unseen])
    for acc, ties in seen_margins:          # every step: all unseen pairs tie, accuracy 1/2
        assert np.all(ties == 1.0) and np.all(acc == 0.5)
    assert not np.array_equal(to_numpy(U)[:, p.seen_tokens], p.U_ref[:, p.seen_tokens])


@given(**structures, steps=st.integers(2000, 3000))
def test_ex_rm_direction_approaches_max_margin(steps, **s):
    """Normalized GD reaches the u* direction. Its time scale is set by the data: the step is
    1/max||z||^2 (scale invariance), and the property is stated for margins of at least a tenth
    of the data scale (tiny-margin problems converge too, only slower). The approach need not
    be monotone, so only where it ends is checked."""
    p = draw(**s)
    tr = p.splits["train"]
    z = tr.h_plus - tr.h_minus
    try:
        mm = [max_margin(zs) for zs in z]
    except NotSeparableError:
        assume(False)
    assume(all(r.margin >= 0.1 * np.linalg.norm(zs, axis=-1).max() for r, zs in zip(mm, z)))
    u_star = np.stack([r.u for r in mm])
    gaps = {}

    def on_checkpoint(t, u):
        if t == 0:  # u(0) = 0 has no direction
            return
        cos = np.sum(u * u_star, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(u_star, axis=-1))
        gaps[t] = 1 - cos

    lr = 1.0 / np.max(np.sum(z**2, axis=-1))
    train_ex_rm(np.zeros_like(z[:, 0]), z, lr=lr, steps=steps, rule="normalized",
                checkpoints=[steps], on_checkpoint=on_checkpoint)
    assert np.all(gaps[steps] <= 1e-2)
