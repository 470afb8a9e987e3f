"""Text and sequence encoders."""
