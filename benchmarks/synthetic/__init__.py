"""The offline synthetic TOFU-style benchmark, the harness default: no downloads, small enough for tiny models."""

from benchmarks.synthetic.tofu_like import make_synthetic_tofu

__all__ = ["make_synthetic_tofu"]
