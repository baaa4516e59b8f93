"""tether: asynchronous control-plane services.

A plugin accepts changes over REST and records them as desired state; agents
apply them to devices through vendor drivers; results flow back so that a
resource's status tells the truth about the device.
"""

__version__ = "0.2.0"
