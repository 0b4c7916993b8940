"""The `devnet` extra (eth-tester, py-evm, solc, scikit-learn, matplotlib): the embedded chain,
the devnet, the engines, the compiler, the reverts generator, the gas report, data shards.
No program imports it at start."""
