"""The ACME appliance driver for tether."""
