"""The sasci-kg benchmark suite: synthetic facts, measured against Oxigraph (see README.md)."""
