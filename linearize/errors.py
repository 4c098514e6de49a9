"""The one error base: a user's input that cannot be used (unknown model, unsupported architecture, bad setting,
broken data file). Its message is one line naming the bad value and what would be accepted; the CLI prints it and
exits 2. It imports nothing, so every part (kernels and data included) may raise it, and a checkpoint's shipped
modeling code carries it as a flat file."""


class LinearizeError(ValueError):
    pass


class SettingError(LinearizeError):
    """A conversion or training setting out of range or unknown."""
