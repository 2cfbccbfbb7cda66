"""A subpackage module of the mutation corpus."""


def g(x):
    return x * 4


def lift(x):
    return x + 100


def unused_sub(x):
    return x
