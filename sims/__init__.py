"""Simulations that replay the paper's theorems in small synthetic models (`python -m sims.<name>`)."""
