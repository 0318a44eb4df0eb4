"""The machinery behind conftest.py: names, namespaces, services, the live server, reports."""
