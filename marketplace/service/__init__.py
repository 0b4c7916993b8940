"""The chain index, the read-only REST API over it with its dashboard, and `blobs push`."""
