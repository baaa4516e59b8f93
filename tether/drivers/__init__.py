"""The driver SDK: everything a vendor needs to write a tether driver.

It imports nothing of the plugin or the agent; a test enforces that, so a
driver package depends on this surface alone.
"""
