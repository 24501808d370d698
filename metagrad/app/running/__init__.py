"""Running a benchmark: the resumable runner and its backends, the result store and the row
schema, memory estimates, progress display and the provenance every row carries."""
