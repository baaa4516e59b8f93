"""The load-balancing set's rules that need the database, checked at accept
(:mod:`tether.plugin.tasks.accept_checks`): VIP addresses given out from a range,
and a VIP address and port served by one listener only (:mod:`.vips`).

``default_pool_id`` is declared as a reference on the listener type
(:mod:`tether.common.lbaas`) and judged by :mod:`tether.plugin.tasks.references`.
"""
