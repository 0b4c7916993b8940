"""A task's off-chain protocol every role shares: the spec, the sealed validation set, who
reads a merge, a node's checks and verdicts, secure aggregation rounds, the posted reports."""
