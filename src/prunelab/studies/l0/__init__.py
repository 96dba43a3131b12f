"""A unit-level subnetwork found from the objective: L0-regularised hard-concrete gates on the
hidden units (Louizos et al. 2018), against ``l2_refit`` at the widths they find.

``study`` declares the study (params section, stage, outputs, section); ``gates`` holds the
gated net, its training, its compaction and the lambda sweep. Page: docs/during.md.
"""
