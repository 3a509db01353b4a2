"""Stage one: the region detector, text encoders and global CNNs that fill the feature store."""

if __name__ != "lighthead.extract":  # one name only: a second would load a second copy of every registry
    raise ImportError(f"this folder installs as `lighthead.extract`; import it under that name, not {__name__!r}")
