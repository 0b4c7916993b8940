"""Pure domain rules: the typed messages, the round schedule and phase rule, model specs, data
files and deterministic scores, the round merge, Shapley values and the reward rule. No chain,
no store, no network."""
