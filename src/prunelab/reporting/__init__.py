"""Statistics across seeds, figures, tables and the plots page."""
