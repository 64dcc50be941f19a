"""Clot measurements: volume, centreline length, density, perviousness, position."""
