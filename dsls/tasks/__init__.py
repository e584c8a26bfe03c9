"""What a trained model is used for, each task one file: evaluate (rerun a checkpoint's search), likelihood."""


class TaskError(ValueError):
    """A task's input is missing or wrong; the message says what to do (the scripts print it without a traceback)."""
