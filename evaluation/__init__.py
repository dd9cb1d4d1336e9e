"""Evaluation material built from real pen trajectories and generated non-digits.

Nothing here is used for training: the real-handwriting set is for measuring only (see its
README), and the generated scribbles and letters measure the "not a digit" answer.
"""
