"""Acquisition of real regions: downloads, remote zip members, verified manifests."""
