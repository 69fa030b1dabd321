"""Model of SPEC section 3: query, title and image encoders, Modal Adaptation, pre-training heads."""
