"""Zone masking inside self-attention: the mask plan and operators (pure tensor functions), the two
hook points every attention call passes, the registered attention function and the per-family
adapters that call them, the recorders, layer replay and size-matched nulls. Knows nothing of QA."""
