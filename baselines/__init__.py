"""Baseline unlearning methods, one module each, all under pmc.methods.base.Method."""
