"""Section 3.2 on a real model: an IM-RM that verifies Hamiltonian cycles it cannot generate.

    python -m sims.section32.data        the pairs, as text (data/section32/)
    python -m sims.hf train ...          the EX-RM and the IM-RM, fully fine-tuned (docs/section32.md)
    python -m sims.section32.generation  the IM-RM's policy against the reference: valid cycles
                                         sampled, the exact mass on every cycle, Theorem 1's bound
"""
