"""Presenting the rows: figures, names and palette, number and table formats, the report, the
one-page HTML and atomic output files."""
