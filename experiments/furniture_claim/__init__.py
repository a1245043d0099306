"""The furniture claim on synthetic data: arms, judging, report, run (see README.md)."""
