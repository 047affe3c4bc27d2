"""The two failures the Space reports to the user as they are (``ui.user_errors`` turns them into ``gr.Error``)."""


class InputError(ValueError):
    """Bad user input; shown to the user as it is."""


class ModelUnavailable(RuntimeError):
    """A configured model cannot be loaded (missing checkpoint, offline Hub id, ...)."""
