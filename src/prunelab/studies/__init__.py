"""The studies: each declares its stages, params, outputs, figure and report
section; registry.py lists them."""
