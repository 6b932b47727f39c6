"""eesim: evidence for serving language models with early-exit decoding."""

__version__ = "0.1.0"
