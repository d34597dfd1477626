"""The native control block as a device test needs it: a block count the test sets by hand (guest
time for a ``GuestClock``) and a deadline the clock writes."""


class FakeControl:
    blocks = 0
    deadline_blocks = 0
