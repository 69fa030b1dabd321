"""Input: TFDS records -> featurised host batches -> device batches (SPEC sections 1, 6).

featurize.py (record -> example), pipeline.py (host-sharded, resumable batches),
device.py (pmap split, global arrays on a mesh), reading.py (whole splits, images
left encoded).
"""
