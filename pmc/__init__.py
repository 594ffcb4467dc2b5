"""pmc-harness: Partial Model Collapse and the harness core (data flow, training loop, sampling, run entry point)."""

__version__ = "0.1.0"
