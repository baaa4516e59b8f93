"""The driver SDK: everything a vendor needs to write a tether driver, and nothing else.

base.py is the API (the Driver class, Change, Resource, Steps, InProgress and the errors);
models.py, lbaas_models.py and model_source.py give typed models of the resource types;
testing.py is the conformance kit (capability_checks.py, step_checks.py and raising.py
are its parts, fixtures.py what it hands a driver). The drivers tether ships are written
on it as a vendor's would be, beside it in :mod:`tether.reference_drivers`.

It imports nothing of the plugin, the agent or the reference drivers; a test
enforces that, so a driver package depends on this surface alone.
"""
