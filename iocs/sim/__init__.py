"""Physical simulators behind the IOCs: plain functions and small state classes, no EPICS."""
