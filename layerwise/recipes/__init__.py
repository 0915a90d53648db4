"""One-call recipes that return plain `Rule`s or gradient transforms."""
