"""Networks as chains of prunable layers, and the study's architectures."""
