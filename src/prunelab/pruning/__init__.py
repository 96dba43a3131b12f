"""Masks, criteria, scope, the one-shot sweep, compaction and what pruning buys."""
