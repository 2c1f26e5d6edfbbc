"""The autograd oracle for the learning-dynamics identities (torch; float64 in tests).

Nothing here uses a closed form: rewards go through the full log-softmax, gradients come
from torch.autograd, and "actual" changes take a real gradient step and re-evaluate.
"""
from __future__ import annotations

import torch

from theory.rewards import bt_loss, ex_rm_reward, im_rm_reward
from theory.sequences import Seqs


def _im_loss(U, plus: Seqs, minus: Seqs, beta, U_ref):
    return bt_loss(im_rm_reward(U, plus.h, plus.y, beta=beta, U_ref=U_ref, mask=plus.mask),
                   im_rm_reward(U, minus.h, minus.y, beta=beta, U_ref=U_ref, mask=minus.mask))


def _im_rewards(U, seqs: Seqs, beta, U_ref):
    return im_rm_reward(U, seqs.h, seqs.y, beta=beta, U_ref=U_ref, mask=seqs.mask)


def delta_r_im_tangent(U, eval_seqs: Seqs, plus: Seqs, minus: Seqs, *, beta, eta, U_ref=None,
                       with_scale: bool = False):
    """eta <grad_U r(xbar,ybar), -grad_U L> for each evaluation sequence, by autograd.  (A,)

    with_scale=True also returns eta max_a ||grad r_a|| ||grad L||, the Cauchy-Schwarz bound
    on |Delta r| on which rounding errors are judged.
    """
    U = U.detach().requires_grad_(True)
    (grad_L,) = torch.autograd.grad(_im_loss(U, plus, minus, beta, U_ref), U)
    out, norms = [], []
    for a in range(eval_seqs.h.shape[0]):
        r = _im_rewards(U, Seqs(*(t[a:a + 1] for t in eval_seqs)), beta, U_ref)
        (grad_r,) = torch.autograd.grad(r.sum(), U)
        out.append(-eta * torch.sum(grad_r * grad_L))
        norms.append(float(torch.linalg.vector_norm(grad_r)))
    delta = torch.stack(out)
    return (delta, eta * max(norms) * float(torch.linalg.vector_norm(grad_L))) if with_scale else delta


def delta_r_im_actual(U, eval_seqs: Seqs, plus: Seqs, minus: Seqs, *, beta, eta, U_ref=None):
    """r(xbar,ybar) after one real GD step on U minus before.  (A,)"""
    U = U.detach().requires_grad_(True)
    (grad_L,) = torch.autograd.grad(_im_loss(U, plus, minus, beta, U_ref), U)
    with torch.no_grad():
        return _im_rewards(U - eta * grad_L, eval_seqs, beta, U_ref) - _im_rewards(U, eval_seqs, beta, U_ref)


def delta_r_ex_actual(u, h_bar, h_plus, h_minus, *, eta):
    """r_EX(xbar,ybar) after one real GD step on u minus before.  (A,)"""
    u = u.detach().requires_grad_(True)
    (grad_L,) = torch.autograd.grad(bt_loss(ex_rm_reward(u, h_plus), ex_rm_reward(u, h_minus)), u)
    with torch.no_grad():
        return ex_rm_reward(u - eta * grad_L, h_bar) - ex_rm_reward(u, h_bar)
