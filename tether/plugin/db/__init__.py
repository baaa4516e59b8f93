"""The plugin's database: models, migrations, sessions and queries.

Only the plugin touches it; agents get everything through messages and RPC.
"""
