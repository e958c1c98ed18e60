"""bfpo: Bi-Factorial Preference Optimization and its baselines, runnable end to end."""

__version__ = "0.1.0"
