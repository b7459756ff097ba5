"""Azure ML launcher tests: Azurite and a loopback fake of the Azure ML workspace API (see conftest.py)."""
