"""The one exception type users see for bad input, bad config or missing files."""


class MtpsdError(Exception):
    """A user-facing error: the message names the file, key or value at fault.

    The CLI prints it on one line (``mtpsd: error: ...``) and exits with status 2,
    without a traceback.
    """
