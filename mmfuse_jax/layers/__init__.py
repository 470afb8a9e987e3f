"""Reusable pure layers shared by the encoders and models."""
