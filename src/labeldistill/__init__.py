"""labeldistill: the label side of dataset distillation (SRe2L/LPLD soft-label pruning, learned labels)."""

__version__ = "0.1.0"
