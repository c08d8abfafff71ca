"""bigs-workflow: reproducible pretraining of BiGS (Bidirectional Gated SSM, Wang et al. 2022)."""

__version__ = "0.1.0"
