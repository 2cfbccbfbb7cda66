"""A user package of the mutation corpus."""
CONST = 5
