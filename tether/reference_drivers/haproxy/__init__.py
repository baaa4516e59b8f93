"""The ``haproxy`` driver: load balancers as HAProxy processes on the agent's host."""

from tether.drivers.base import opts_entry_point
from tether.reference_drivers.haproxy.driver import HaproxyDriver

__all__ = ["HaproxyDriver", "list_opts"]

#: the ``oslo.config.opts`` entry point of ``[driver:haproxy]``
list_opts = opts_entry_point(HaproxyDriver)
