"""Data in: reading volumes (:mod:`tctseg.data.io`) and one converter per dataset layout
(:mod:`tctseg.data.conversion`)."""
