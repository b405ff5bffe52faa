"""How a delivery attempt can fail: worth another try, or never."""


class DeliveryFailed(Exception):
    """A delivery attempt failed; the message says why."""


class TransientFailure(DeliveryFailed):
    """Down, slow, busy or refused for now: tried again later, with backoff."""


class PermanentFailure(DeliveryFailed):
    """Refused for good (a bad address, HTTP 4xx): recorded, never tried again."""
