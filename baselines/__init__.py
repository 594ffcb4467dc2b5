"""Baseline unlearning methods, one module each, all under pmc.method.Method."""
