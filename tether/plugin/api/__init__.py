"""The REST API and what only it uses: authentication, policy, idempotency keys, long polls
and the console; a change it accepts goes to :mod:`tether.plugin.tasks.changes`."""
