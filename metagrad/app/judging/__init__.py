"""Judging the rows: the one statistics module, paired comparisons between estimators, the claim
framework, the leaderboard and the regression check of stored cells."""
