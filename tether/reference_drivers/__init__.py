"""The drivers shipped with tether, written on the SDK (:mod:`tether.drivers`) as a vendor's would be:
``noop`` and ``fake`` for tests and trials, ``haproxy`` for load balancing on the agent's host."""
