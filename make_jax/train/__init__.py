"""Training: masking, the optimiser, the train state and one step (SPEC sections 4, 6)."""
