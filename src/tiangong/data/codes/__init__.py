"""Dimension code tables shipped as package data (GB/T 2260 regions, GB/T 4754 industries)."""
