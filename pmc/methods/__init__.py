"""The methods layer's PMC side: the method protocol every method implements (base.py) and Partial Model Collapse
itself; the baselines live in baselines/. Imports only pmc.core (docs/architecture.md)."""
