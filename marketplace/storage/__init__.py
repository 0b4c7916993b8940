"""Blobs by CID in a folder or an IPFS node, and local files written atomically and read with
a cap."""
