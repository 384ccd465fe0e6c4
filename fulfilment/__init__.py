"""Middle and back office workers: Dramatiq actors and the services they call."""
