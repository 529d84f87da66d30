"""tenacia: fault-tolerant LLM training on any PyTorch backend, a portable server, a fleet planner."""

__version__ = "0.1.0"
