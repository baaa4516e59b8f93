"""The plugin's database: models, migrations, sessions, queries, and its errors as tether's own;
only the plugin touches it, agents get everything through messages and RPC."""
