"""Similarity analyzers: one module each (class_cosine, ssim, wavelet)."""
