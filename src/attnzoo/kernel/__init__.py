"""Kernel attention: φ(Q)(φ(K)ᵀV) with linear, efficient, Performer and RFA features."""
