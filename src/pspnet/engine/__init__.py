"""Training and evaluation machinery: losses (more arrives with the training and evaluation issues)."""
