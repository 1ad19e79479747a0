"""Leaderboards: entries made from finished runs (``uqbench submit``) and the boards made from them
(``uqbench leaderboard``)."""
