"""The bytes parties exchange: CIDs, weights as safetensors, architecture bundles, commitments
and the payout Merkle tree, envelopes and their keys, the payout report, secure aggregation's
formats. Built on `rules` only."""
