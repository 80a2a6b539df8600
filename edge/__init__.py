"""Returns-grading edge controller."""
__version__ = "0.1.0"
