"""Code shared by every component: artifact storage, experiment tracking, errors, hashing."""
