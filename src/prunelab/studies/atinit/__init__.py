"""Tickets without a trained net: masks from the untrained net (pruning at initialisation),
their sanity checks, and supermasks found from the objective with the weights never trained.

``study`` declares the study (params section, stages, outputs); ``scores`` holds the at-init
methods, ``supermask`` edge-popup, ``arms`` what each training is (resumable), ``compare`` the
view across seeds. Page: docs/atinit.md. Kept free of imports, so the fingerprint of a finished
arm (:func:`.arms.fingerprint`) covers the code that computes it, not the declaration.
"""
