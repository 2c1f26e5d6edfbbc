"""The mathematics of the paper as code: one implementation for NumPy and torch arrays."""
