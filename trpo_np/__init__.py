"""trpo_np: Trust Region Policy Optimization (Schulman et al., 2015) in plain NumPy."""

__version__ = "0.1.0"
