"""The real TOFU benchmark (Maini et al., 2024), loaded into the shared QA record schema."""

from benchmarks.tofu.data import load_tofu

__all__ = ["load_tofu"]
