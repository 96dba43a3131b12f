"""Pruning while training: gradual magnitude pruning and the synaptic-pruning schedule,
early-bird tickets, and dynamic sparse training (SET, RigL) beside a static random mask.

``study`` declares the study (params section, stages, outputs); ``schedule`` holds the sparsity
schedules; ``sparse`` the training loop whose mask changes while it trains, and the methods
that change it; ``arms`` what each training is (resumable) and how it is tested; ``compare``
the view across seeds. Page: docs/during.md. Kept free of imports, so the fingerprint of a
finished arm (:func:`.arms.fingerprint`) covers the code that computes it, not the declaration.
"""
