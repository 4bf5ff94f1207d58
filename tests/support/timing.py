"""The one place where tests state a time margin.

Every wait returns as soon as its event happens; these constants only bound how long a test waits
before it calls the event missing, and the slack a timed guarantee gets for scheduling on a loaded
machine. `.ci/run` runs the system tier a second time with a CPU hog on every core, so a test that
needs more than this is a test that depends on the machine's speed.
"""

from __future__ import annotations

#: seconds a test waits for an event before failing (2 shared cores, a CPU hog: generous on purpose)
WAIT = 20.0
#: seconds added to a timed guarantee (a grace period ending, a flood being cut) for scheduling
SLACK = 1.0
