"""What sponsors, evaluators and anyone do: the sponsor's actions, judging with no account
(`Scorer`), the evaluator process that posts, `verify`."""
