"""The mathematics of the paper as code: one function per equation, NumPy and torch arrays alike.

Where each equation or claim of the paper lives (notation: docs/paper_notes.md):

| equation or claim                                            | function                                            |
|--------------------------------------------------------------|-----------------------------------------------------|
| EX-RM reward r_EX = <u, h_{x,y}> (and the margin <u, z_i>)   | theory.rewards.ex_rm_reward                         |
| IM-RM reward r_IM = beta ln pi/pi_ref (any model's log-probs)| theory.rewards.implicit_reward                      |
| ... for an LM with unembedding U on hidden states h          | theory.rewards.im_rm_reward, sequence_log_prob      |
| Bradley-Terry loss; g = sigmoid(r- - r+)                     | theory.rewards.bt_loss; theory.gradients.bt_weights |
| accuracy, ties 1/2 (paper) or 0 (TRL, RewardBench)           | theory.rewards.accuracy                             |
| normalised absolute margin (official code, ddof = 1)         | theory.rewards.normalised_margin                    |
| tie tolerance from the dtype                                 | theory.tolerance.tie_tolerance                      |
| grad_u L (EX-RM), grad_U L (IM-RM, single token)             | theory.gradients.ex_rm_grad, im_rm_single_token_grad|
| grad_U ln pi(y|x) = sum_k (e_{y_k} - pi_k) h_k^T             | theory.gradients.log_prob_grad_from_probs           |
| Eq. 5: rho_kl                                                | theory.dynamics.rho, rho_pairs                      |
| Eq. 5: reward kernel Theta (two routes)                      | theory.dynamics.reward_kernel                       |
| Eq. 5: Delta r_IM per example / per mini-batch               | theory.dynamics.reward_change_matrix_im, delta_r_im |
| Delta r_EX (exact)                                           | theory.dynamics.reward_change_matrix_ex, delta_r_ex |
| Theorem 2: hard-margin separator u* and its certificate      | theory.max_margin.max_margin, certificate           |
| Theorem 2: 1 - cos(u_t, u*)                                  | theory.max_margin.direction_gap                     |
| Theorem 2: unseen rows of U never move                       | theory.gradients.im_rm_single_token_grad (zero rows)|
| Theorem 1: tilted construction, pi(C|x) in closed form       | theory.theorem1.tilt, closed_form_correct_mass      |
| Theorem 1: pi(C|x) <= pi_ref(C|x) exp(max_C r / beta)        | theory.theorem1.generation_bound                    |
| the autograd oracle for all of the above                     | theory.oracle                                       |
"""
