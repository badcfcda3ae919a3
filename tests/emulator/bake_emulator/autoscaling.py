"""Instance refresh, lifecycle actions and health replacement for moto's Auto Scaling backend."""


def install():
    """Patch moto's autoscaling backend and responses. Idempotent."""


def shutdown():
    """Stop background threads."""
