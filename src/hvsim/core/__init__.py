"""The Unicorn-backed machine: memory, CPU state, run loop, trap dispatch, shared PC devices."""
