"""Stage one: the region detector, text encoders and global CNNs that fill the feature store."""
