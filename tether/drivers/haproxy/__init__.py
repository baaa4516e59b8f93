"""The ``haproxy`` driver: load balancers as HAProxy processes on the agent's host."""

from tether.drivers.haproxy.driver import HaproxyDriver

__all__ = ["HaproxyDriver"]
