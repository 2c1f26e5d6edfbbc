"""Closed-form gradients of the Bradley-Terry loss for the fixed-representation models.

Under Assumption 1 (fixed hidden representations) only the EX-RM head `u` and the IM-RM
unembedding `U` train. With margins m_i = r(x_i,y+_i) - r(x_i,y-_i) and
g_i = sigmoid(-m_i) (paper_notes §2), L = mean_i softplus(-m_i) has dL/dm_i = -g_i / n, so

    EX-RM:  grad_u L = -(1/n) sum_i g_i z_i,          z_i = h_{x_i,y+_i} - h_{x_i,y-_i}
    IM-RM:  grad_U L = -(beta/n) sum_i g_i [grad_U ln pi(y+_i|x_i) - grad_U ln pi(y-_i|x_i)]
            grad_U ln pi(y|x) = sum_k (e_{y_k} - pi(.|x,y<k)) h_{x,y<k}^T.

Single-token responses (Assumption 2) share the prompt position h_x, so the softmax terms
cancel exactly:  grad_U L = -(beta/n) sum_i g_i (e_{y+_i} - e_{y-_i}) h_{x_i}^T.  Rows of
tokens that occur in no training pair get an exactly-zero gradient (Theorem 2).
"""
from __future__ import annotations

from theory.backend import log_softmax, namespace, one_hot, sigmoid
from theory.rewards import ex_rm_reward, unembed


def bt_weights(margins):
    """g_i = sigmoid(r(x,y-) - r(x,y+)) = sigmoid(-m_i) > 0."""
    return sigmoid(-margins)


def ex_rm_grad(u, z):
    """grad_u L for EX-RM.  u (*B, D), z (*B, n, D) = h+ - h-  ->  (*B, D)."""
    return ex_rm_grad_from_weights(z, bt_weights(ex_rm_reward(u, z)))


def ex_rm_grad_from_weights(z, g):
    """-(1/n) sum_i g_i z_i for given weights g (*B, n): the gradient when g = bt_weights."""
    xp = namespace(z, g)
    return -xp.matmul(g[..., None, :], z)[..., 0, :] / z.shape[-2]


def token_difference(y_plus, y_minus, vocab_size: int, like):
    """E_i = e_{y+_i} - e_{y-_i} for single-token responses.  (*B, n) ids -> (*B, n, V)."""
    return one_hot(y_plus, vocab_size, like) - one_hot(y_minus, vocab_size, like)


def im_rm_single_token_margins(U, h_x, E, *, beta: float, margins_ref=None):
    """m_i = beta * <E_i, (U - U_ref) h_{x_i}>, without forming log-softmax (it cancels).

    U (*B, V, D), h_x (*B, n, D), E (*B, n, V) from `token_difference`; `margins_ref` is the
    reference model's beta * <E_i, U_ref h_{x_i}> (None: no reference).  -> (*B, n).
    """
    xp = namespace(U, h_x)
    m = beta * xp.sum(xp.matmul(E, U) * h_x, axis=-1)              # (*B, n)
    return m if margins_ref is None else m - margins_ref


def im_rm_single_token_grad(h_x, E, g, *, beta: float):
    """grad_U L = -(beta/n) sum_i g_i E_i h_{x_i}^T.  -> (*B, V, D).

    h_x (*B, n, D), E (*B, n, V), g (*B, n) the Bradley-Terry weights.
    """
    xp = namespace(h_x, E)
    return -(beta / h_x.shape[-2]) * xp.matmul(xp.matrix_transpose(E), g[..., None] * h_x)


def log_prob_grad_from_probs(pi, h, y, mask=None):
    """grad_U ln pi(y|x) = sum_k (e_{y_k} - pi(.|x,y<k)) h_{x,y<k}^T, from the next-token
    distributions pi (n, L, V) at the sequence's positions.  h (n, L, D), y (n, L), mask (n, L)
    -> (n, V, D). Materialises one |V| x D gradient per sequence (the reference computation
    for multi-token responses, and the "gradient" route of the Eq. 5 kernel)."""
    xp = namespace(pi, h)
    resid = one_hot(y, pi.shape[-1], pi) - pi                       # (n, L, V)
    if mask is not None:
        resid = resid * xp.astype(mask, pi.dtype)[..., None]
    return xp.matmul(xp.matrix_transpose(resid), h)                # (n, V, D)


def im_rm_log_prob_grad(U, h, y, mask=None):
    """grad_U ln pi(y|x) for the LM with unembedding U (V, D) on hidden states h (n, L, D)."""
    xp = namespace(U, h)
    return log_prob_grad_from_probs(xp.exp(log_softmax(unembed(U, h), axis=-1)), h, y, mask)
