"""placeholder"""


class Finding:
    pass


def lint_surrogate(fn, **kw):
    return []
