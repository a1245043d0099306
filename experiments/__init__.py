"""Questions about the method (not speed): each folder holds its arms, judging, report and run.

Run a study as a module from the repository root, e.g.
``.venv/bin/python -m experiments.split_quality.run``.
"""
