"""MUSE (Shi et al., 2024): unlearning news articles or books, evaluated on verbatim memorisation, knowledge
memorisation and privacy leakage. The real benchmark (`load_muse`) and an offline synthetic one (`make_synthetic_muse`),
both as raw-text `QABenchmark`s scored by the `muse` metric suite."""

from benchmarks.muse.data import load_muse
from benchmarks.muse.synthetic import make_synthetic_muse

__all__ = ["load_muse", "make_synthetic_muse"]
