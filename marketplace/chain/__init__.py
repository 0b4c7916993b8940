"""The GradientMarketplace contract from Python: the typed client, transactions, the ABI's
decoders, one model per event, the reverts generated from the ABI, the committed artifacts,
each program's copy of the events."""
