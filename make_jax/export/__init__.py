"""Offline half of serving: embedding export, the ScaNN index, the qid table (SPEC 7)."""
