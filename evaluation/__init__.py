"""Evaluation material built from real pen trajectories and generated non-digits.

Nothing here is used for training: the real-handwriting set is for measuring only (see its
README), and the generated scribbles and letters measure the "not a digit" answer.

- ``unipen.py``: the pen-trajectory reader of the real-handwriting development set
- ``canvas_layouts.py``: those digits placed on the canvas, and composed into numbers
- ``non_digits.py``: generated scribbles, letters and doodles
- ``drawings.py``: MNIST and optdigits digits redrawn as canvas strokes (tests and benchmarks)
"""
