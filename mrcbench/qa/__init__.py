"""Extractive question answering: token windows, fine-tuning, decoding, prediction, and one loaded
evaluation run shared by the attention and grid commands."""
