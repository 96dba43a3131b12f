"""Pruning criteria: how the weights or units of a layer are ranked, each a named part.

One criterion per module concern (`magnitude`: the weights alone; `calibrated`: statistics of
calibration inputs; `reconstruct`: criteria that also re-fit the weights they keep), all named
in `registry.CRITERIA`. Add one by writing its functions and one registry line.
"""
