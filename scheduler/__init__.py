"""Observing sequences run on the RunEngine: the demo night (``scheduler.demo``)."""
