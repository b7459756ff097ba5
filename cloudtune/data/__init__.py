"""Torch-free data rules shared by the plan side (preflight) and the recipes: what a valid input looks like."""
