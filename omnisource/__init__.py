"""omnisource: omni-sourced webly-supervised learning for video recognition."""

__version__ = "0.1.0"
