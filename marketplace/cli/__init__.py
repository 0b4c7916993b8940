"""The `marketplace` command line (evaluators and operators) and what every command line
shares."""
